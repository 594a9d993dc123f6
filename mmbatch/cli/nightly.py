"""Submit the nightly scoring job to a Ray cluster, wait for it, retry what is worth retrying.

Ray Jobs never retries a failed job by itself. Rerunning the same --run-date is safe (it
resumes where the failed attempt stopped), so a scheduler (cron, Airflow, a KubeRay CronJob)
calls this wrapper instead of `ray job submit`:

    mmbatch nightly --address http://head:8265 --retries 2 -- \\
        --config pipelines/video_sentiment.yaml --input s3://b/videos/ --output s3://b/scores/

Everything after `--` goes to jobs/score_videos.py; --run-date defaults to today (UTC) and is
fixed once here, so every retry works on the same night. Each attempt's submission id is
`mmbatch-<run date>-<attempt>`; an attempt of the same night that is still running is waited
for, never submitted twice. The exit code is the job driver's own (read from Ray Jobs, not from
the logs): 0 committed, 1 not committed (retried here first), 2 not worth retrying (arguments,
configuration, input, models), 3 committed but degraded. Stopping this wrapper (SIGTERM, SIGINT)
stops the Ray job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import signal
import sys
import time
from pathlib import Path

from mmbatch.cli import checkout_root, configure_logging, logging_option

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
EXCLUDES = [".git", ".venv", "venv", "tests", "mmbatch_demo", "benchmarks/results", "**/__pycache__"]


def _status(client, job_id: str) -> str:
    return str(client.get_job_status(job_id)).split(".")[-1]


def _exit_code(client, job_id: str, status: str) -> int:
    """The driver's own exit code; a driver that never reported one (killed, lost) is a system failure."""
    from mmbatch.errors import ExitCode

    if status == "SUCCEEDED":
        return ExitCode.OK
    code = getattr(client.get_job_info(job_id), "driver_exit_code", None)
    return ExitCode.SYSTEM if code in (None, 0) else int(code)


def _submit(client, submission_id: str, entrypoint: str, working_dir: str) -> str:
    """Submit, or attach to the same night's attempt when it exists and is still running."""
    try:
        existing = _status(client, submission_id)
    except Exception:
        existing = None
    if existing is not None and existing not in TERMINAL:
        print(f"{submission_id} is already running: waiting for it", flush=True)
        return submission_id
    if existing is not None:  # this wrapper ran before for the night: a new id for this attempt
        submission_id = f"{submission_id}-{int(time.time())}"
    return client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                             runtime_env={"working_dir": working_dir, "excludes": EXCLUDES})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    ap.add_argument("--retries", type=int, default=2, help="extra attempts after one that failed with exit code 1")
    ap.add_argument("--backoff-s", type=float, default=60.0, help="wait before a retry (doubles each time)")
    ap.add_argument("--poll-s", type=float, default=5.0, help="how often the job's status is asked for, seconds")
    ap.add_argument("--working-dir", default=str(checkout_root() or Path.cwd()),
                    help="the project folder shipped to the cluster (default: this checkout, else the current folder)")
    logging_option(ap)
    ap.add_argument("job_args", nargs=argparse.REMAINDER, help="-- then arguments for score_videos.py")
    args = ap.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    return args


def main(argv: list[str] | None = None) -> int:
    from mmbatch.errors import ExitCode, first_line

    args = parse_args(argv)
    job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
    if "--run-date" not in job_args:
        job_args += ["--run-date", dt.datetime.now(dt.timezone.utc).date().isoformat()]
    run_date = job_args[job_args.index("--run-date") + 1]

    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
    except Exception as err:
        text = str(err)
        if "token" in text.lower() or "authentication" in text.lower() or type(err).__name__ == "AuthenticationError":
            print(f"error: the Ray cluster at {args.address} requires its token: set RAY_AUTH_MODE=token, with the "
                  "token from the head's ~/.ray/auth_token", file=sys.stderr)
        else:
            print(f"error: cannot reach the Ray cluster at {args.address}: {first_line(err)}",
                  file=sys.stderr)
        return ExitCode.SYSTEM

    entrypoint = "python jobs/score_videos.py " + shlex.join(job_args)
    current: dict[str, str] = {}

    def stop(signum, _frame):  # a stopped scheduler task stops its Ray job too
        if current.get("job"):
            print(f"stopping {current['job']} (signal {signum})", flush=True)
            try:
                client.stop_job(current["job"])
            except Exception as err:
                print(f"could not stop {current['job']}: {err}", file=sys.stderr)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff, code = args.backoff_s, ExitCode.SYSTEM
    for attempt in range(1, args.retries + 2):
        try:
            job_id = _submit(client, f"mmbatch-{run_date}-{attempt}", entrypoint, args.working_dir)
        except Exception as err:  # the cluster refused the submission (agent not ready, network)
            print(f"attempt {attempt}: submission failed: {first_line(err)}", flush=True)
            code = ExitCode.SYSTEM
        else:
            current["job"] = job_id
            print(f"attempt {attempt}: submitted {job_id}: {entrypoint}", flush=True)
            while (status := _status(client, job_id)) not in TERMINAL:
                time.sleep(args.poll_s)
            print(client.get_job_logs(job_id)[-4000:], flush=True)
            code = _exit_code(client, job_id, status)
            print(f"attempt {attempt}: {status}, exit code {code}", flush=True)
            if code != ExitCode.SYSTEM:
                return code  # committed, degraded, or an error that a retry cannot fix
        if attempt <= args.retries:
            print(f"attempt {attempt} is worth retrying; retrying in {backoff:.0f} s", flush=True)
            time.sleep(backoff)
            backoff *= 2
    return code

