"""Where a job's CPU-seconds go: sampled from /proc by process kind, and split into what grows
with clips and what does not.

A job run from the benchmark is one process tree: the driver, Ray's daemons it starts (GCS,
raylet, dashboard, agents), the workers the raylet starts (titled `ray::<what they run>`), and
their own children (the decode actors' watchdog children). Each process's user + system time is
read once a second and every increase is booked to the kind the process had at that moment (a
Ray worker changes title when it takes on other work). A process that exits loses at most its
last second. Two runs at different sizes separate the cost per clip (the slope) from the fixed
cost (the intercept): `budget`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
# Ray Data operator names (our stage names) -> the kind of work they are.
STAGE_KINDS = {"decode": "decode", "split": "split", "discover": "split", "fusion": "fusion", "write": "write",
               "encoders": "models", "vision": "models", "audio": "models", "speech": "models", "text": "models",
               "transcripts": "models"}
KINDS = ("driver", "decode", "decode children", "split", "models", "fusion", "write",
         "ray system actors and idle workers", "ray worker start-ups", "ray daemons", "other children")
# Ray's own kinds: also booked by process name (`ray_cpu_s_by_process`).
RAY_KINDS = ("ray system actors and idle workers", "ray worker start-ups", "ray daemons")
STAGE_IN_TITLE = re.compile(r"\((\w+)\)")


def process_kind(title: str, parent_kind: str | None, is_root: bool) -> str:
    """The kind of a process of the job's tree, from its title (argv[0]) and its parent's kind."""
    if is_root:
        return "driver"
    if title.startswith("ray::"):
        stages = STAGE_IN_TITLE.findall(title)
        name = stages[-1] if stages else title[5:].split(".")[0]
        return STAGE_KINDS.get(name.lower(), "ray system actors and idle workers")
    if "default_worker.py" in title:  # a Ray worker importing Ray, before it takes a `ray::` title
        return "ray worker start-ups"
    if parent_kind in ("decode", "decode children"):
        return "decode children"
    if parent_kind in (None, "driver", "ray daemons"):  # GCS, raylet, dashboard and its agents
        return "ray daemons"
    return "other children"


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * TICK_S


def _title(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    title = argv[0].decode(errors="replace")
    # Daemons run as `python .../ray/_private/...py` or a binary path: their script names them (a
    # starting worker's may come third: `python setup_worker.py default_worker.py`).
    return " ".join(a.decode(errors="replace") for a in argv[:3]) if not title.startswith("ray::") else title


def _short_title(pid: int, title: str) -> str:
    """A Ray process's name without paths and flags, from its `_title`: `ray::_StatsActor`,
    `raylet`, `gcs_server`, `agent.py` (a `python -u .../agent.py` daemon)."""
    if title.startswith("ray::"):
        return title.split(" ")[0]
    try:  # a daemon's script may come after a flag: past the two arguments `_title` keeps
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:4]
    except OSError:
        return "?"
    names = [Path(a).name for a in argv if a and not a.startswith("-")]
    return next((n for n in names if n.endswith(".py")), names[0] if names else "?")


class CpuAccount:
    """CPU-seconds of a process tree by kind; call `sample(pids)` with the tree's PIDs (parents
    before children), then read `.seconds`."""

    def __init__(self, root: int):
        self.root = root
        self.seconds: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._used: dict[int, float] = {}
        self._kind: dict[int, str] = {}
        # Ray's own processes by title (which system actor, which daemon): the kinds no stage names.
        self.ray_titles: dict[str, float] = {}

    def sample(self, pids: list[int]) -> None:
        for pid in pids:
            stat = _stat(pid)
            if stat is None:
                continue
            ppid, used = stat
            title = _title(pid)
            kind = process_kind(title, self._kind.get(ppid), pid == self.root)
            self._kind[pid] = kind
            spent = used - self._used.get(pid, 0.0)
            self.seconds[kind] += spent
            self._used[pid] = used
            if kind in RAY_KINDS:
                name = _short_title(pid, title)
                self.ray_titles[name] = self.ray_titles.get(name, 0.0) + spent

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def summary(self, clips: int) -> dict:
        top = sorted(self.ray_titles.items(), key=lambda kv: -kv[1])[:12]
        return {"cpu_s": {k: round(v, 2) for k, v in self.seconds.items()}, "cpu_s_total": round(self.total, 2),
                "ray_cpu_s_by_process": {t: round(v, 2) for t, v in top if v >= 0.05},
                "cpu_ms_per_clip": {k: round(1000 * v / clips, 2) for k, v in self.seconds.items()} if clips else {}}


def tree_cpu_s(pids: list[int]) -> float:
    """CPU-seconds the live processes `pids` have used so far (children that exited are not counted)."""
    return sum(stat[1] for stat in map(_stat, pids) if stat is not None)


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has been busy since boot (every core, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) * TICK_S


def machine_info() -> dict:
    """The machine a report came from: CPU model, logical CPUs, memory (from /proc)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    return {"cpu_model": model, "logical_cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1)}


def budget(small: dict, large: dict) -> dict:
    """Per kind, from two runs' `{"clips": n, "cpu_s": {kind: s}}`: CPU milliseconds each clip adds
    (slope) and the seconds a run costs whatever its size (intercept, floored at 0). With both
    runs' `wall_s`, also the cores each kind keeps busy while the job runs (the same slope per
    second of wall time): what polls and idles costs by the second, not by the clip."""
    dc = large["clips"] - small["clips"]
    if dc <= 0:
        raise ValueError("the larger run must have more clips")
    dt = large.get("wall_s", 0.0) - small.get("wall_s", 0.0)
    rows = {}
    for kind in KINDS:
        a, b = small["cpu_s"].get(kind, 0.0), large["cpu_s"].get(kind, 0.0)
        per_clip = (b - a) / dc
        rows[kind] = {"ms_per_clip": round(1000 * per_clip, 2),
                      "fixed_s": round(max(0.0, a - per_clip * small["clips"]), 2)}
        if dt > 0:
            rows[kind]["cores_while_running"] = round((b - a) / dt, 3)
    per_clip_total = sum(r["ms_per_clip"] for r in rows.values())
    return {"by_kind": rows, "ms_per_clip_total": round(per_clip_total, 2),
            "fixed_s_total": round(sum(r["fixed_s"] for r in rows.values()), 2),
            # What the per-clip cost alone allows on this many cores, if the fixed cost were paid once.
            "clips_per_s_if_cpu_bound": {str(cores): round(cores * 1000 / per_clip_total, 1) if per_clip_total > 0 else None
                                         for cores in (2, 16)}}
