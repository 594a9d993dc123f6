"""The night's watchers without a night: OpenLineage's dataset names, the series a committed and a
failed night push, and a watcher that cannot be reached (one warning, never the night's outcome).
A real night, watched by a real Pushgateway and a lineage receiver: tests/test_api.py."""

from __future__ import annotations

import datetime as dt
import logging

from s3server import free_port

from mmbatch.config import RunConfig
from mmbatch.errors import ConfigError, OutputMistakeError, Terminated, exit_code_of
from mmbatch.monitor import Monitor
from mmbatch.monitor.lineage import dataset_name, output_datasets
from mmbatch.monitor.prometheus import committed_samples, failed_samples


def test_datasets_are_named_by_openlineage_naming():
    assert dataset_name("s3://bucket/videos/2026/") == ("s3://bucket", "videos/2026")
    assert dataset_name("s3://key:secret@bucket/v") == ("s3://key:***@bucket", "v")  # never a credential
    assert dataset_name("/data/in") == ("file", "/data/in") == dataset_name("file:///data/in")
    assert output_datasets("gs://b/scores/")["clips"] == ("gs://b", "scores/clips")


def test_a_committed_night_pushes_its_figures_and_a_failed_one_its_end():
    record = {"counts": {"inputs": 3, "scored": 2, "failed": 1, "clips": 8},
              "timings": {"wall_seconds": 4.0, "pool_busy_share": {"decode": 0.25, "encoders": 0.75}},
              "modalities": {"text": {"failed_fraction": 0.125}}}
    got = {(name, tuple(labels.values())): value for name, labels, value in committed_samples(record, 3, 100.0)}
    assert got[("clips", ())] == 8 and got[("clips_per_second", ())] == 2.0 and got[("exit_code", ())] == 3
    assert got[("videos", ("failed",))] == 1 and got[("modality_failed_fraction", ("text",))] == 0.125
    assert got[("busiest_pool_share", ())] == 0.75 and got[("last_success_timestamp_seconds", ())] == 100.0
    failed = {name: value for name, _, value in failed_samples(2, 200.0)}
    assert failed == {"exit_code": 2, "running": 0, "last_failure_timestamp_seconds": 200.0, "end_timestamp_seconds": 200.0}


def test_each_ending_is_pushed_with_the_commands_exit_code():
    assert [exit_code_of(e) for e in (ConfigError("x"), OutputMistakeError("x"), RuntimeError("x"),
                                      KeyboardInterrupt(), Terminated())] == [2, 2, 1, 130, 143]


def test_an_unreachable_watcher_costs_a_warning_not_the_night(caplog):
    config = RunConfig(metrics={"pushgateway": f"127.0.0.1:{free_port()}", "timeout_s": 2})
    monitor = Monitor(config, "/in", "/out", dt.date(2026, 11, 27))
    with caplog.at_level(logging.WARNING, logger="mmbatch.monitor"):
        monitor.started("r", 1)
        monitor.failed(RuntimeError("boom"))
        monitor.failed(RuntimeError("again"))  # one ending a night
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["the Pushgateway could not be told the night started",
                                                                     "the Pushgateway could not be told the night failed"]
    assert Monitor().watchers == []


def test_watcher_urls_are_redacted_in_the_saved_config():
    from mmbatch.config import parse_config

    config = parse_config({"models": {"text": {"task": "text_zero_shot", "source": "tiny:roberta-sentiment"}},
                           "run": {"metrics": {"pushgateway": "https://ops:hunter2@push.example:9091"}}})
    assert config.redacted()["run"]["metrics"]["pushgateway"] == "https://ops:***@push.example:9091"
    assert config.run.metrics.pushgateway.endswith("hunter2@push.example:9091")  # used as given
