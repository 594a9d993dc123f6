#!/usr/bin/env python
"""Submit the nightly scoring job to a Ray cluster, wait for it, retry a failed submission.

Ray Jobs never retries a failed job by itself. Rerunning the same --run-date is safe (it
resumes where the failed attempt stopped), so a scheduler (cron, Airflow, a KubeRay CronJob)
calls this wrapper instead of `ray job submit`:

    python jobs/nightly.py --address http://head:8265 --retries 2 -- \\
        --config pipelines/video_sentiment.yaml --input s3://b/videos/ --output s3://b/scores/

Everything after `--` goes to jobs/score_videos.py; --run-date defaults to today (UTC) and is
fixed once here, so every retry works on the same night. Exit code: that of the last attempt's
job (0 ok, 2 committed with too many failed videos, 1 otherwise).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Submit jobs/score_videos.py to Ray, wait, retry on failure.")
    ap.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    ap.add_argument("--retries", type=int, default=2, help="extra attempts after a failed one")
    ap.add_argument("--backoff-s", type=float, default=60.0, help="wait before a retry (doubles each time)")
    ap.add_argument("--poll-s", type=float, default=5.0)
    ap.add_argument("--working-dir", default=str(REPO))
    ap.add_argument("job_args", nargs=argparse.REMAINDER, help="-- then arguments for score_videos.py")
    args = ap.parse_args(argv)
    job_args = args.job_args[1:] if args.job_args[:1] == ["--"] else args.job_args
    if "--run-date" not in job_args:
        job_args += ["--run-date", dt.datetime.now(dt.timezone.utc).date().isoformat()]

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(args.address)
    entrypoint = "python jobs/score_videos.py " + shlex.join(job_args)
    excludes = [".git", ".venv", "venv", "tests", "mmbatch_demo", "benchmarks/results", "**/__pycache__"]
    backoff = args.backoff_s
    status = "FAILED"
    for attempt in range(args.retries + 1):
        try:
            job_id = client.submit_job(entrypoint=entrypoint,
                                       runtime_env={"working_dir": args.working_dir, "excludes": excludes})
        except Exception as err:  # the cluster refused the submission (agent not ready, network)
            print(f"attempt {attempt + 1}: submission failed: {err}", flush=True)
            status = "FAILED"
        else:
            print(f"attempt {attempt + 1}: submitted {job_id}: {entrypoint}", flush=True)
            while (status := str(client.get_job_status(job_id)).split(".")[-1]) not in TERMINAL:
                time.sleep(args.poll_s)
            logs = client.get_job_logs(job_id)
            print(logs[-4000:], flush=True)
            if status == "SUCCEEDED":
                return 0
            if "committed:" in logs and "max-failed-fraction" in logs:
                return 2  # the run committed; too many bad inputs is not fixed by retrying
        if attempt < args.retries:
            print(f"attempt {attempt + 1} ended {status}; retrying in {backoff:.0f} s", flush=True)
            time.sleep(backoff)
            backoff *= 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
