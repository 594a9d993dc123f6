"""Score a video collection for sentiment, clip by clip, and write Parquet.

Nightly:   ray job submit --working-dir . -- python jobs/score_videos.py \\
               --config pipelines/video_sentiment.yaml --input s3://b/videos/ --output s3://b/scores/
Laptop:    mmbatch score --demo          (the same as python jobs/score_videos.py --demo)

Inputs: a folder, prefix or glob of videos; one video; a manifest (.csv/.jsonl/.parquet with a
`uri` column); WebDataset .tar shards; HLS .m3u8 media playlists. Same-stem .vtt/.srt/.txt files
are transcripts. Local paths, s3:// or any fsspec URI.

Cluster: without RAY_ADDRESS a local Ray starts; `ray job submit` (or RAY_ADDRESS=auto / a head
address) attaches to a cluster. Everything that can fail fast is checked before any video is read:
configuration, inputs and the output's writability before Ray starts, the models while it starts.

Exit codes (a scheduler retries only 1; 130 and 143 say the run was stopped):
  0    committed
  1    not committed; worth retrying (infrastructure, a full disk, the night held by another run)
  2    not committed; not worth retrying (bad arguments, configuration, input or models, or an
       output that needs a person: a file in the way, another format, a damaged file it names)
  3    committed, but degraded (more than --max-failed-fraction of videos failed, a configured
       modality failed on more than run.max_modality_failed_fraction of its clips, or the state
       table was not updated)
  130  interrupted (SIGINT); 143 terminated (SIGTERM): not committed, the lease released
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from mmbatch.cli import CODE_ROOT, configure_logging, logging_option, shipped_pipelines, stop_on_sigterm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Score videos for sentiment per clip with Ray Data; write Parquet under --output.",
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="pipeline YAML (default: pipelines/video_sentiment.yaml; "
                                     "pipelines/demo.yaml with --demo)")
    p.add_argument("--input", help="folder, prefix, glob, video, manifest (.csv/.jsonl/.parquet), .tar shard or "
                                    ".m3u8 playlist: local path, s3://, or any fsspec URI")
    p.add_argument("--output", help="output root: local path, s3://, or any fsspec URI")
    p.add_argument("--run-date", type=dt.date.fromisoformat, default=None,
                   help="the night this run belongs to, YYYY-MM-DD (default: today, UTC); "
                        "rerunning a date resumes or repeats it")
    p.add_argument("--allow-future-date", action="store_true",
                   help="accept a --run-date more than a day after today (UTC); a mistyped future night would "
                        "otherwise stop later nights from skipping what it scored")
    p.add_argument("--force", action="store_true", help="rescore videos already scored on an earlier date")
    p.add_argument("--max-failed-fraction", type=float, default=None,
                   help="exit 3 when more than this fraction of attempted videos failed (default from config: 0.2)")
    p.add_argument("--dry-run", action="store_true",
                   help="check config, models, inputs and output, print what would be scored, resumed, skipped "
                        "and refused, and exit (no Ray)")
    logging_option(p, default="INFO")
    p.add_argument("--json", action="store_true", help="print the night's summary as one JSON object (errors stay on stderr)")
    p.add_argument("--demo", action="store_true",
                   help="write sample videos to a local folder and score them with pipelines/demo.yaml (no network)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored when attaching)")
    args = p.parse_args(argv)
    if not args.demo and not (args.input and args.output):
        p.error("--input and --output are required (or use --demo)")
    today = dt.datetime.now(dt.timezone.utc).date()
    if args.run_date and args.run_date > today + dt.timedelta(days=1) and not args.allow_future_date:
        p.error(f"--run-date {args.run_date} is more than a day after today ({today}, UTC); pass "
                "--allow-future-date if that night is meant")
    if args.max_failed_fraction is not None and not 0 <= args.max_failed_fraction <= 1:
        p.error("--max-failed-fraction must be between 0 and 1")
    return args


def init_ray(num_cpus: int | None, log_level: str = "INFO", config=None, log_format: str = "text") -> None:
    """Attach to the cluster RAY_ADDRESS names (set by `ray job submit` and by users attaching),
    shipping what workers need; else start a local Ray that declares every node type. Ray Data's
    live progress bars show on a terminal (elsewhere the job's progress line serves)."""
    from mmbatch import allocator
    from mmbatch.pipeline import ray_runtime

    if config is None or config.run.malloc_tuning:
        allocator.tune_this_process()  # the driver: its workers get the same through their environment
    ray_runtime.show_progress_bars(sys.stderr.isatty() or log_level == "DEBUG")
    if ray_runtime.ray_is_up():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray_runtime.start_ray(log_level, log_format=log_format,
                              runtime_env=attached_runtime_env(config, os.environ) if config is not None else None)
    else:
        os.environ.update(local_ray_environment(os.environ, config))  # the local Ray's processes inherit it
        ray_runtime.start_ray(log_level, log_format=log_format, num_cpus=num_cpus,
                              resources=local_resources(config) if config is not None else None)
    stop_on_sigterm()  # ray.init replaced ours with its own bare exit


def start_ray_quietly(args: argparse.Namespace, config) -> None:
    """The command's Ray: `init_ray`, then, below DEBUG, the one native line Ray prints on every
    healthy run dropped from this process's stderr (mmbatch.cli.console)."""
    from mmbatch.cli import console

    init_ray(args.num_cpus, args.log_level, config, args.log_format)
    if args.log_level != "DEBUG":
        console.drop_benign_native_lines()


def attached_runtime_env(config, environ) -> dict[str, Any]:
    """What workers of an attached cluster need from this driver: the non-secret settings and the
    variables run.worker_env names (mmbatch.cluster.worker_env), and this code unless the job
    already brings it (`ray job submit --working-dir`) — merged by Ray with the job's own."""
    import logging

    import mmbatch
    from mmbatch import cluster

    job = cluster.job_runtime_env(environ)
    env: dict[str, Any] = {}
    env_vars = cluster.worker_env(config, environ, already=job.get("env_vars"))
    if env_vars:
        env["env_vars"] = env_vars
    if not cluster.ships_code(job):
        env["py_modules"] = [str(Path(mmbatch.__file__).parent)]
        env["excludes"] = ["__pycache__", "*.pyc"]
    for name in cluster.missing_worker_env(config, environ):
        logging.getLogger("score_videos").warning("run.worker_env names %s, which this driver does not have", name)
    return env


def local_resources(config) -> dict[str, float]:
    """A local Ray is every node type at once: it declares each custom resource the config's pools
    name (plenty of each), so a YAML written for a cluster's node types runs on one machine."""
    pools = [config.decode.pool, config.encoders.pool, config.fusion.pool]
    pools += [section.pool for section in config.models.configured().values()]
    names = [n for pool in pools for n in pool.resources] + list(config.output.write_resources)
    return {n: 1000.0 for n in dict.fromkeys(names)}


def local_ray_environment(environ, config=None) -> dict[str, str]:
    """What a local Ray started by the job needs in its environment: PYTHONPATH, so workers import
    mmbatch from this code even when it is not pip-installed, and the allocator settings
    (run.malloc_tuning). Inherited rather than set in a runtime_env, so the workers Ray starts
    ahead of the job serve it instead of being replaced by new ones on the busy cores."""
    from mmbatch import allocator

    parts = [str(CODE_ROOT)] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(parts))}
    if config is None or config.run.malloc_tuning:
        env.update(allocator.malloc_env(environ))
    return env


def plan_while_ray_starts(plan: Callable[[Callable[[], None]], Any], start_ray: Callable[[], None] | None,
                          timeout_s: float | None = None, watch=None):
    """Plan the run in a thread and start Ray in this one once the plan has checked the inputs and
    the output: reading the models' configs (it imports torch) and starting Ray each take seconds
    on a small machine and share nothing. A bad input or output fails before Ray starts; a bad
    model once Ray is up, still before any video is read. `plan(checked)` calls `checked()`;
    `start_ray` None: no Ray (a dry run).

    The plan must finish within `timeout_s` (run.plan_timeout_s), or PlanTimeoutError names what
    it was reading (`watch`: mmbatch.pipeline.run.PlanWatch) and the lease it holds is released. The
    plan's thread is a daemon: a plan stuck in a read never keeps the process alive."""
    import threading
    import time

    deadline = time.monotonic() + (timeout_s if timeout_s is not None else float("inf"))
    checked, done, outcome = threading.Event(), threading.Event(), {}

    def run():
        try:
            outcome["plan"] = plan(checked.set)
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err
        finally:
            done.set()

    threading.Thread(target=run, name="plan", daemon=True).start()
    try:
        if _wait(checked, done, deadline) and start_ray is not None:
            start_ray()  # the inputs and the output passed: Ray starts while the models are read
        if not done.wait(None if timeout_s is None else max(0.0, deadline - time.monotonic())):
            raise _plan_timeout(timeout_s, watch)
    except BaseException:  # Ray failed to start, an interrupt or the deadline: free the night at once,
        _release_when_planned(done, outcome, watch)  # not when the lease lapses
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["plan"]


def _wait(checked, done, deadline: float) -> bool:
    """True once the plan has checked inputs and output; False if it ended before that."""
    import time

    while not checked.wait(0.02):
        if done.is_set():
            return False
        if time.monotonic() > deadline:
            return False
    return True


def _plan_timeout(timeout_s: float | None, watch):
    from mmbatch.errors import PlanTimeoutError

    doing = getattr(watch, "doing", "planning")
    return PlanTimeoutError(f"the plan did not finish within run.plan_timeout_s = {timeout_s:g} s; it was {doing} "
                            "(a store that stalls, or an input that takes too long to read); nothing was scored, "
                            "and a rerun of this date starts again")


def _release_when_planned(done, outcome, watch) -> None:
    """Release the night's lease: now (the plan has ended, or is stuck holding it), and again once
    a still-running plan ends (release is idempotent: it removes only our own lease)."""
    import threading

    def release():
        if "plan" in outcome:
            outcome["plan"].release()

    if done.is_set():
        release()
        return
    lease = getattr(watch, "lease", None)
    if lease is not None:
        lease.release()
    threading.Thread(target=lambda: done.wait() or release(), name="plan-release", daemon=True).start()


def print_demo_table(output: str, run_date: dt.date, config) -> None:
    from mmbatch.tables.formats import open_tables

    clips = open_tables(output, config.storage_options, config.output).read_date("clips", run_date).to_pandas()
    clips = clips.sort_values(["video_id", "clip_index"])
    print("\nPer clip (transcript from the demo's .vtt sidecars; text scored by a real sentence-embedding model):")
    for r in clips.itertuples():
        text = (r.transcript or "")[:62]
        tv = "  n/a" if r.text_valence != r.text_valence else f"{r.text_valence:+.2f}"
        print(f"  {r.video_id:<15} {r.start_s:5.1f}-{r.end_s:5.1f}s  text {tv}  fused {r.sentiment:<8} "
              f"{r.valence:+.2f}  {text}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    import logging

    configure_logging(args.log_level, args.log_format)
    from mmbatch.config import load_config
    from mmbatch.errors import ExitCode, MmbatchError, Terminated, exit_code_of, short_reason

    run_date = args.run_date or dt.datetime.now(dt.timezone.utc).date()
    config_path = args.config or str(shipped_pipelines() / ("demo.yaml" if args.demo else "video_sentiment.yaml"))
    try:
        config = load_config(config_path)
        if args.demo:
            from mmbatch.synth import write_demo_inputs

            demo_root = Path(os.environ.get("MMBATCH_DEMO_DIR", "mmbatch_demo")).resolve()
            args.input = args.input or str(demo_root / "videos")
            args.output = args.output or str(demo_root / "scores")
            write_demo_inputs(args.input)
            print(f"demo: wrote sample videos with transcripts to {args.input}")
        if args.max_failed_fraction is not None:  # the night's record and its exit code read the config
            config = config.model_copy(update={"run": config.run.model_copy(
                update={"max_failed_fraction": args.max_failed_fraction})})
        if args.dry_run:
            plan = score_night(config, args.input, args.output, run_date, force=args.force, dry_run=True)
            print(f"dry run: {plan.summary()}")
            for ref in plan.refused[:20]:
                print(f"  refused {ref.video_id}: {ref.error}")
            return ExitCode.OK
        result = score_night(config, args.input, args.output, run_date, force=args.force,
                             start_ray=lambda: start_ray_quietly(args, config),
                             planned=lambda plan: print(f"plan: {plan.summary()}", flush=True))
    except MmbatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # SIGINT, or SIGTERM (Terminated): the lease is released by now
        terminated = isinstance(err, Terminated)
        print(f"error: {'terminated (SIGTERM)' if terminated else 'interrupted'}; nothing was committed; rerun the "
              "same --run-date to resume", file=sys.stderr)
        return exit_code_of(err)
    except Exception as err:  # a bug or an infrastructure failure: one line, the traceback in the log
        logging.getLogger("score_videos").debug("unexpected failure", exc_info=True)
        print(f"error: unexpected failure: {short_reason(err, 500)} (--log-level DEBUG shows "
              "the traceback; a rerun of the same --run-date resumes)", file=sys.stderr)
        return ExitCode.SYSTEM

    return finish(args, config, result, run_date)


def score_night(config, input_uri: str, output_uri: str, run_date: dt.date, *, force: bool = False,
                dry_run: bool = False, start_ray: Callable[[], None] | None = None, planned=None):
    """Plan the night (Ray starting meanwhile), run and commit it: the RunResult; a dry run: the plan.
    The night's watchers (run.metrics, run.lineage) are told how it went, an uncommitted end too."""
    from mmbatch.monitor import Monitor
    from mmbatch.pipeline.run import PlanWatch, execute, plan_run

    watch = PlanWatch()
    monitor = Monitor(None if dry_run else config.run, input_uri, output_uri, run_date, config.output)
    try:
        plan = plan_while_ray_starts(
            lambda checked: plan_run(config, input_uri, output_uri, run_date, force=force, checked=checked,
                                     dry_run=dry_run, watch=watch),
            None if dry_run else start_ray, config.run.plan_timeout_s, watch)
        if dry_run:
            return plan
        if planned is not None:
            planned(plan)
        return execute(plan, strict_resources=not os.environ.get("RAY_ADDRESS"), monitor=monitor)
    except BaseException as err:
        monitor.failed(err)
        raise


def replaced_line(record: dict) -> str:
    """What a rerun of a committed date replaced, or ""."""
    replaced = record.get("replaced")
    if not replaced:
        return ""
    before = (replaced.get("counts") or {}).get("scored", "?")
    carried = len(record.get("carried_over") or [])
    return (f"\nreplaced the committed night of {record['run_date']} (commit {replaced['commit_id'][:8]} of "
            f"{replaced.get('committed_at') or '?'}, {before} videos scored; its record is kept at "
            f"{replaced['record']}); {carried} of its videos carried over")


def finish(args: argparse.Namespace, config, result, run_date: dt.date) -> int:
    """The summary of a committed night and its exit code: 0, or 3 when it is degraded."""
    rate = result.clips / result.wall_seconds if result.wall_seconds else 0.0
    shares = result.manifest.get("timings", {}).get("pool_busy_share") or {}
    busiest = max(shares, key=shares.get) if shares else None
    reasons, code = result.degraded, result.exit_code
    if getattr(args, "json", False):
        print(json.dumps({"run_id": result.run_id, "output": result.output, "run_date": run_date.isoformat(),
                          "inputs": result.inputs, "scored": result.scored, "failed": result.failed,
                          "skipped": result.skipped, "clips": result.clips, "wall_seconds": round(result.wall_seconds, 3),
                          "clips_per_second": round(rate, 3), "pool_busy_share": shares, "exit_code": int(code),
                          "degraded": reasons, "replaced": result.manifest.get("replaced")}, default=str))
    else:
        print(
            f"run {result.run_id} committed: {result.inputs} videos: {result.scored} scored, {result.failed} failed, "
            f"{result.skipped} skipped; {result.clips} clips in {result.wall_seconds:.1f} s ({rate:.2f} clips/s)"
            + (f"; busiest pool {busiest} ({shares[busiest]:.0%} of its time working)" if busiest else "")
            + f"\noutput: {result.output}"
            + replaced_line(result.manifest)
        )
    if args.demo and not getattr(args, "json", False):
        print_demo_table(args.output, run_date, config)
        if config.output.format == "parquet":  # a table format is read through it (docs/output.md)
            print(f"\nTry:  python -c \"import duckdb; print(duckdb.sql(\\\"SELECT video_id, round(avg(valence), 3) AS "
                  f"valence FROM '{args.output}/clips/**/*.parquet' GROUP BY 1 ORDER BY 1\\\"))\"")
    if reasons:  # the most serious one; the night's report lists them all
        print(f"error: {reasons[0]}", file=sys.stderr)
    return code
