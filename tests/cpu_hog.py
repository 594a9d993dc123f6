"""Run a command with busy loops beside it, one per core: a busy machine, as a nightly job's
cluster often is. The loops are our own subprocesses, stopped by their PIDs afterwards.

    python tests/cpu_hog.py --loops 2 --repeat 3 -- python -m pytest -q

The loops run at Ray's worker niceness (15) by default: the load of another Ray job's tasks on
the same nodes, which share the cores evenly with ours. At niceness 0 they are not a busy cluster
but a starved one: Ray starts its workers at 15, so each loop gets ~28x a worker's share and the
job's actors run on ~3% of a core (`--nice 0` shows it).

Exits with the first failing run's code (or 0), after printing each run's code and wall time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time


def _spin(nice: int) -> None:
    os.nice(nice)
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", type=int, default=os.cpu_count() or 2, help="busy loops (default: one per core)")
    ap.add_argument("--nice", type=int, default=15, help="the loops' niceness (default: Ray's worker niceness, 15)")
    ap.add_argument("--repeat", type=int, default=1, help="run the command this many times in a row")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command after --")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the loops on TERM too
    hogs = [mp.get_context("spawn").Process(target=_spin, args=(args.nice,), daemon=True) for _ in range(args.loops)]
    for h in hogs:
        h.start()
    code = 0
    try:
        for i in range(args.repeat):
            t0 = time.time()
            rc = subprocess.call(command)
            print(f"cpu_hog: run {i + 1} of {args.repeat} exited {rc} after {time.time() - t0:.0f} s "
                  f"beside {args.loops} busy loops at niceness {args.nice}", flush=True)
            if rc and not code:
                code = rc
    finally:
        for h in hogs:
            h.kill()
            h.join()
    return code


if __name__ == "__main__":
    sys.exit(main())
