"""A multi-node Ray cluster on this machine, for tests and benchmarks: a head and worker nodes,
each `ray start --block` as our own subprocess (its own session), stopped by its PID.

Nodes declare node-type resources (`cpu_node`, `gpu_node`) as a real cluster's node types do
(infra/ray-cluster.yaml). A node started with `private=` gets a disk of its own: it runs in a
mount namespace (`unshare -m`) with an empty tmpfs mounted over that folder, so the folder the
driver sees is not there for it (a node without NFS). Jobs attach with RAY_ADDRESS=<address>.

    with LocalCluster(tmp) as cluster:
        cluster.add_node(num_cpus=1, resources={"cpu_node": 1000})
        gpu = cluster.add_node(num_cpus=1, num_gpus=1, resources={"gpu_node": 1000})
        score_job(cluster, config, input_uri=..., output_uri=..., run_date=...)  # attached through RAY_ADDRESS
        cluster.kill_node(gpu)            # a lost node: SIGKILL of its whole process group

Every node listens on 127.0.0.1 only, with token authentication off (a private test cluster).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from s3server import free_port

REPO = Path(__file__).resolve().parent.parent
TAG = "test_node:"


def actor_class(stage: str) -> str:
    """The class name Ray Data gives a stage's pool actors (the GCS's actor table shows it)."""
    return f"MapWorker(MapBatches({stage}))"


def stage_of(actor_cls: str) -> str | None:
    """The stage whose pool an actor class serves; None for Ray's and Ray Data's own actors."""
    head, tail = actor_class("|").split("|")
    return actor_cls[len(head):-len(tail)] if actor_cls.startswith(head) and actor_cls.endswith(tail) else None


DECODE, ENCODERS = actor_class("decode"), actor_class("encoders")
ANSWER = "cluster-query-answer: "  # marks the answer of LocalCluster.query in its driver's output
FAILED = "cluster-query-failed: "
# LocalCluster.query's driver: one JSON-encoded expression a line in, an ANSWER line (its JSON value)
# or a FAILED line (the error) out.
QUERY_DRIVER = f"""
import json, sys, ray
ray.init(address=%r, logging_level="ERROR", log_to_driver=False)
for line in sys.stdin:
    try:
        answer = {ANSWER!r} + json.dumps(eval(json.loads(line)))
    except Exception as err:
        answer = {FAILED!r} + repr(err)
    print(answer, flush=True)
"""
NODE_ENV_DROP = ("RAY_ADDRESS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "MMBATCH_CACHE")


def can_isolate_disks() -> str | None:
    """None if a node can get a disk of its own here, else the reason it cannot."""
    if not shutil.which("unshare"):
        return "unshare(1) is not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this kernel refuses a private mount namespace: {probe.stderr.strip()[:200]}"
    return None


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    resources: dict
    killed: bool = False  # stopped on purpose (a lost node), not crashed


class LocalCluster:
    def __init__(self, root: Path, head_cpus: float = 0, object_store_mb: int = 150):
        self.root = Path(root)
        self.temp = Path("/tmp") / f"rc-{os.getpid()}-{free_port()}"  # short: unix socket paths are limited
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.object_store = str(object_store_mb * 2**20)
        self.nodes: list[Node] = []
        self._declared: dict[str, dict] = {}  # node id -> resources, as seen while alive
        self.head_cpus = head_cpus
        self._querier = None  # the driver that answers `query`, and its output's lines
        # Nodes start without the driver's credentials, endpoint or model cache: what a job needs
        # must travel with it, as on a real cluster.
        self.env = {k: v for k, v in os.environ.items() if k not in NODE_ENV_DROP}
        self.env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                         # A lost node is declared dead after ~3 s instead of ~15 s: shorter tests.
                         "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                         # No instance-metadata lookups for credentials (there is no EC2 here).
                         "AWS_EC2_METADATA_DISABLED": "true"})

    def __enter__(self) -> "LocalCluster":
        for attempt in (1, 2):  # a head can time out starting its raylet on a busy machine: one more try
            self.nodes = [self._start("head", ["--head", "--port", str(self.port), "--num-cpus", str(self.head_cpus),
                                               "--include-dashboard", "false", "--temp-dir", str(self.temp)], {})]
            try:
                self.wait_for(1)
                break
            except RuntimeError:
                self.__exit__()
                if attempt == 2:
                    raise
                self.port = free_port()
                self.address = f"127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        # Killed, not stopped: a `ray start --block` node of Ray 2.60 never finished its graceful stop
        # within the 5 s it was given here (the suite waited them out every run), and the test is done.
        self._stop_querier()
        for node in reversed(self.nodes):
            self.kill_node(node)
        shutil.rmtree(self.temp, ignore_errors=True)

    def job_env(self) -> dict[str, str]:
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}

    def add_node(self, num_cpus: float = 1, num_gpus: float = 0, resources: dict | None = None,
                 private: Path | None = None, wait: bool = True) -> Node:
        name = f"node{len(self.nodes)}"
        # A resource of its own tells the node apart in ray.nodes() (node_of).
        resources = {**(resources or {}), f"{TAG}{name}": 1}
        args = ["--address", self.address, "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
                "--resources", json.dumps(resources)]
        node = self._start(name, args, resources, private)
        self.nodes.append(node)
        if wait:  # (nodes started side by side on this machine: one of three timed out registering)
            self.wait_for(len(self.alive()))
            self.node_ids()  # remember what it declares, to name it after it is lost
        return node

    def _start(self, name: str, args: list[str], resources: dict, private: Path | None = None) -> Node:
        ports = [x for flag in ("node-manager-port", "object-manager-port", "runtime-env-agent-port",
                                "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "metrics-export-port")
                 for x in (f"--{flag}", str(free_port()))]
        cmd = [shutil.which("ray") or "ray", "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
               "--object-store-memory", self.object_store, *ports, *args]
        if private is not None:  # a disk of its own: an empty tmpfs over `private`, in this node's namespace only
            private.mkdir(parents=True, exist_ok=True)
            script = f"mount -t tmpfs tmpfs {_q(private)} && exec " + " ".join(_q(c) for c in cmd)
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        return Node(name, proc, resources)

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.proc.poll() is None]

    def wait_for(self, n: int, timeout_s: float = 120) -> None:
        """Until the cluster reports `n` alive nodes (asked from a subprocess: this one may hold its own Ray)."""
        deadline, last = time.time() + timeout_s, None
        while time.time() < deadline:
            for node in self.nodes:
                if node.proc.poll() is not None and not node.killed:
                    raise RuntimeError(f"{node.name} exited during start-up; see {self.root / node.name}.log")
            try:  # a head still starting can hold a driver's connect past the query's timeout: ask again
                wait_s = max(5, min(60, deadline - time.time()))
                if self.query("len([n for n in ray.nodes() if n['Alive']])", timeout_s=wait_s) >= n:
                    return
            except (subprocess.TimeoutExpired, RuntimeError) as err:
                last = err
            time.sleep(0.25)
        raise RuntimeError(f"the cluster did not reach {n} nodes within {timeout_s} s (last query: {last})")

    def query(self, expression: str, timeout_s: float = 60):
        """Evaluate `expression` in a driver attached to the cluster (ray imported); its JSON value.
        One driver answers every query (a new one a query cost ~1.5 s of CPU, while the night under
        test shares the machine's two cores); it is started again after a timeout or its end."""
        if self._querier is None:
            proc = subprocess.Popen([sys.executable, "-c", QUERY_DRIVER % self.address], text=True,
                                    env={**self.env, **self.job_env()}, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            lines: queue.Queue = queue.Queue()  # its output, a line at a time ("" at its end)

            def relay():
                for line in proc.stdout:
                    lines.put(line)
                lines.put("")

            threading.Thread(target=relay, daemon=True).start()
            self._querier = (proc, lines)
        proc, lines = self._querier
        seen, deadline = [], time.time() + timeout_s
        try:
            proc.stdin.write(json.dumps(expression) + "\n")
            proc.stdin.flush()
            while True:  # Ray prints to stdout too (e.g. a lost node's "raylet has lagging heartbeats")
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.time()))
                except queue.Empty:
                    raise subprocess.TimeoutExpired(expression, timeout_s) from None
                if not line:
                    raise RuntimeError(f"cluster query failed: {''.join(seen)[-2000:]}")
                if line.startswith((ANSWER, FAILED)):
                    break
                seen.append(line)
        except BaseException:  # busy, gone or interrupted: a fresh driver next time
            self._stop_querier()
            raise
        if line.startswith(FAILED):  # the expression's own error: the driver is fine
            raise RuntimeError(f"cluster query {expression!r} failed: {line[len(FAILED):]}")
        return json.loads(line[len(ANSWER):])

    def _stop_querier(self) -> None:
        if self._querier is not None:
            _stop(self._querier[0])
            self._querier = None

    def actors(self) -> list[dict]:
        """Every actor the cluster has seen: class name, state and node id (the GCS's actor table)."""
        return self.query("[{'id': i, 'job': a['JobID'], 'cls': a['ActorClassName'], 'state': a['State'], "
                          "'node': a['Address']['NodeID']} for i, a in ray._private.state.actors().items()]")

    def new_actors(self, before: list[dict]) -> list[dict]:
        """Actors that were not in `before` (an earlier `actors()`): those of the jobs run since."""
        seen = {a["id"] for a in before}
        return [a for a in self.actors() if a["id"] not in seen]

    def actor_nodes(self, before: list[dict], alive_only: bool = False) -> dict[str, set[str]]:
        """Actor class -> the names of the nodes its actors (of the jobs run since `before`) are or
        were last on."""
        nodes = self.node_ids()
        out: dict[str, set[str]] = {}
        for a in self.new_actors(before):
            if not alive_only or a["state"] == "ALIVE":
                out.setdefault(a["cls"], set()).add(self.node_of(a["node"], nodes))
        return out

    def node_ids(self) -> dict[str, dict]:
        """Node id -> its declared resources, for every node that ever joined (a dead node's are
        what it declared when last seen alive: the GCS reports none for it)."""
        now = self.query("{n['NodeID']: n['Resources'] for n in ray.nodes()}")
        self._declared.update({node_id: res for node_id, res in now.items() if res})
        return {**now, **self._declared}

    def node_of(self, node_id: str, nodes: dict[str, dict] | None = None) -> str:
        """The name of the node with Ray node id `node_id` ("head" for the head)."""
        res = (nodes or self.node_ids())[node_id]
        return next((k[len(TAG):] for k in res if k.startswith(TAG)), "head")

    def kill_node(self, node: Node, gracefully: bool = False) -> None:
        """Stop a node: SIGINT lets `ray start --block` shut down its processes; without `gracefully`,
        SIGKILL of its whole process group, as a lost machine."""
        node.killed = True
        _stop(node.proc, signal.SIGINT if gracefully else signal.SIGKILL)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Stop a process we started in a session of its own: `sig` to its group, then SIGKILL to
    whatever is left of it (the workers a node started)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def node_typed_config(folder: Path, *, per_modality: bool = False, file_mb: float = 0.02, **run) -> Path:
    """tiny.yaml for a cluster of 1-CPU nodes: decode on CPU-type nodes, the models and fusion on
    the GPU-type node (one colocated actor, or `per_modality`: an actor each). No credentials or
    endpoint in it: the endpoint comes from AWS_ENDPOINT_URL, the credentials from the variables
    run.worker_env names. Small clip files (`file_mb`), so staged parts show mid-night. Written to
    folder/night.yaml."""
    cfg = yaml.safe_load((REPO / "pipelines" / "tiny.yaml").read_text())
    cfg["storage_options"] = {"client_kwargs": {"region_name": "us-east-1"}}
    cfg["decode"]["pool"] = {"num_cpus": 0.5, "concurrency": [1, 2], "batch_size": 1, "resources": {"cpu_node": 0.001}}
    cfg["encoders"]["pool"] = {"num_cpus": 0.5, "num_gpus": 1, "concurrency": [1, 1], "batch_size": 4,
                               "resources": {"gpu_node": 0.001}}
    if per_modality:
        cfg["encoders"]["placement"] = "per_modality"
        for section in [*cfg["models"].values(), cfg["fusion"]]:
            section["pool"] = {"num_cpus": 0.1, "num_gpus": 0.2, "concurrency": [1, 1], "batch_size": 4,
                               "resources": {"gpu_node": 0.001}}
    cfg["output"] = {"write_cpus": 0.1, "target_file_mb": file_mb}
    cfg["run"] = {"ray_data_reservation": False, "worker_env": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], **run}
    path = Path(folder) / "night.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def score_job(cluster: LocalCluster, config: Path, *, input_uri: str, output_uri: str, run_date: str,
              env: dict[str, str] | None = None, wait: bool = True, timeout_s: float = 600):
    """The real job attached to `cluster` through RAY_ADDRESS (as `ray job submit` runs it), with
    `env` (credentials, endpoint) beside this process's environment: finished (CompletedProcess,
    output captured) or, with wait=False, running (Popen, stdout and stderr merged)."""
    env = {**os.environ, **cluster.job_env(), **(env or {})}
    cmd = [sys.executable, str(REPO / "jobs" / "score_videos.py"), "--config", str(config), "--input", input_uri,
           "--output", output_uri, "--run-date", run_date, "--log-level", "WARNING"]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)


def wait_until(ready, proc: subprocess.Popen, what: str, timeout_s: float = 300):
    """Poll `ready()` until it returns something true (returned) while the job in `proc` runs;
    the job ending or the timeout first is an error naming `what`, with the job's output."""
    deadline = time.time() + timeout_s
    while not (found := ready()):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{what}: {(proc.stdout.read() if proc.stdout else '')[-3000:]}")
        time.sleep(0.5)
    return found


def wait_for_actor(cluster: LocalCluster, before: list[dict], cls: str, proc: subprocess.Popen,
                   timeout_s: float = 300) -> set[str]:
    """Until an actor of class `cls` (of the jobs run since `before`) is alive; the nodes it is on."""
    return wait_until(lambda: cluster.actor_nodes(before, alive_only=True).get(cls), proc,
                      f"no {cls} actor came up", timeout_s)


def staged_files(fs, output: str) -> list[str]:
    """The clip files a night has staged so far under `output` (an s3fs path without the scheme)."""
    fs.invalidate_cache()
    return fs.glob(f"{output}/_staging/*/parts/*.parquet")


def lose_nodes_mid_night(cluster: LocalCluster, before: list[dict], fs, output: str, proc: subprocess.Popen, *,
                         decode_node: bool, gpu_node: bool, timeout_s: float = 300
                         ) -> tuple[list[Node], float | None, float | None]:
    """The losses of the night running in `proc`, each while work is still to come. With
    `decode_node`: the CPU-type node(s) of the decode actor, two seconds after it comes up (while
    it decodes). With `gpu_node`: the GPU-type node, a GPU-type replacement joining at once (as an
    autoscaler would start one; it becomes `cluster.gpu`), at the first clip file staged under
    `output` (the encoders are producing) or, after a decode-node loss, as soon as decode is back
    up on another node, whichever comes first. The second moment is what keeps the loss mid-night
    on a busy machine: there the writes can trail the encoders until decode has finished, and a
    loss at the first staged file then lands after the encoders' last batch (seen beside a CPU
    hog). Returns the lost nodes, when the first was lost and when the first file was staged
    (time.time(); None if the GPU-type node went first)."""
    lost: list[Node] = []
    first_loss = staged = None
    if decode_node:
        decoding = wait_for_actor(cluster, before, DECODE, proc, timeout_s)
        lost = [n for n in cluster.cpu if n.name in decoding]
        time.sleep(2)  # a video or two in
        first_loss = time.time()
        for node in lost:
            cluster.kill_node(node)
    gone = {n.name for n in lost}

    def moment():
        if staged_files(fs, output):
            return "staged"
        if not gone:
            return None
        try:  # the GCS can be slow to answer right after a loss: ask again at the next poll
            return cluster.actor_nodes(before, alive_only=True).get(DECODE, set()) - gone and "decode resumed"
        except (RuntimeError, subprocess.TimeoutExpired):
            return None

    why = wait_until(moment, proc, f"no clip staged under {output}" + (" and decode not back up" if gone else ""),
                     timeout_s)
    if why == "staged":
        staged = time.time()
    if gpu_node:
        first_loss = first_loss or time.time()
        lost.append(cluster.gpu)
        cluster.kill_node(cluster.gpu)
        cluster.gpu = cluster.add_node(1, num_gpus=1, resources={"gpu_node": 1000}, wait=False)
    return lost, first_loss, staged


def _q(s: str | Path) -> str:
    import shlex

    return shlex.quote(str(s))
