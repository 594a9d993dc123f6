"""The rules behind a night on a cluster, as pure functions (no Ray but for the placement wait, on
the session's Ray): what travels to the workers, which local folders every node must share,
node-type resources, and how Ray failures are named. tests/test_cluster.py runs the same rules on
a real multi-node cluster."""

from __future__ import annotations

import json

import pytest

from mmbatch import cluster
from mmbatch.allocator import MALLOC_ENV
from mmbatch.cli.score import attached_runtime_env, local_resources
from mmbatch.config import parse_config
from mmbatch.errors import ClusterError, ConfigError, ExitCode
from mmbatch.pipeline.ray_runtime import check_cluster_fits, cluster_failure, pool_demand, starting_sizes

TEXT = {"task": "text_classification", "source": "tiny:roberta-sentiment"}


def config(**sections):
    return parse_config({"models": {"text": TEXT}, **sections})


def test_only_named_and_non_secret_variables_travel():
    cfg = config(run={"worker_env": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "NOT_SET"]})
    environ = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok",
               "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "MMBATCH_CACHE": "/cache", "HOME": "/root", "PATH": "/bin"}
    assert cluster.worker_env(cfg, environ) == {
        "MMBATCH_CACHE": "/cache", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cr3t", **MALLOC_ENV}
    assert cluster.missing_worker_env(cfg, environ) == ["NOT_SET"]
    # Nothing named: no credential travels, whatever the driver has.
    assert "AWS_ACCESS_KEY_ID" not in cluster.worker_env(config(), environ)
    # What the job's own runtime_env sets is left to it (Ray refuses a variable set twice).
    assert "MMBATCH_CACHE" not in cluster.worker_env(cfg, environ, already={"MMBATCH_CACHE": "/other"})


def test_workers_get_the_allocator_settings_unless_turned_off():
    # The driver's own values travel instead of the defaults; a job's runtime_env keeps its own.
    assert cluster.worker_env(config(), {"MALLOC_TRIM_THRESHOLD_": "0"}) == {**MALLOC_ENV, "MALLOC_TRIM_THRESHOLD_": "0"}
    assert cluster.worker_env(config(), {}, already={"MALLOC_TRIM_THRESHOLD_": "7"}) == {
        "MALLOC_MMAP_THRESHOLD_": MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]}
    assert cluster.worker_env(config(run={"malloc_tuning": False}), {}) == {}


def test_attached_runtime_env_ships_code_unless_the_job_brings_it():
    cfg = config(run={"worker_env": ["AWS_ACCESS_KEY_ID"]})
    env = attached_runtime_env(cfg, {"AWS_ACCESS_KEY_ID": "AKIA", "MMBATCH_CACHE": "/c"})
    assert env["env_vars"] == {"MMBATCH_CACHE": "/c", "AWS_ACCESS_KEY_ID": "AKIA", **MALLOC_ENV}
    assert [p.rsplit("/", 1)[-1] for p in env["py_modules"]] == ["mmbatch"]
    # Under `ray job submit --working-dir .`: the job's runtime_env already carries the code and a variable.
    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip", "env_vars": {"MMBATCH_CACHE": "/c"}}}
    env = attached_runtime_env(cfg, {"AWS_ACCESS_KEY_ID": "AKIA", "MMBATCH_CACHE": "/c",
                                     "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job)})
    assert env == {"env_vars": {"AWS_ACCESS_KEY_ID": "AKIA", **MALLOC_ENV}}


def test_local_folders_that_every_node_must_see(tmp_path):
    model = tmp_path / "text-model"
    model.mkdir()
    cfg = parse_config({"models": {"text": {**TEXT, "source": str(model)},
                                   "vision": {"task": "image_zero_shot", "source": "tiny:clip"},
                                   "audio": {"task": "audio_classification", "source": "package:some_models"}},
                        "inputs": {"allowed_roots": ["/mnt/shared/sidecars/", "s3://b/x/"]}})
    assert cluster.local_paths(cfg, str(tmp_path / "in" / "list.csv")) == [
        ("the input", str(tmp_path / "in")), ("inputs.allowed_roots", "/mnt/shared/sidecars"),
        ("model folder of models.text", str(model))]
    assert cluster.local_paths(config(), "s3://bucket/videos/") == []  # object storage: nothing to share
    assert cluster.packages(cfg) == [("models.audio", "some_models")]


def test_two_disks_are_told_apart(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "v1.mp4").write_bytes(b"x" * 10)
    assert cluster.path_signature(str(a)) == cluster.path_signature(str(b))
    (b / "v2.mp4").write_bytes(b"y")
    assert cluster.path_signature(str(a)) != cluster.path_signature(str(b))
    assert cluster.path_signature(str(tmp_path / "nowhere")) == "missing"
    (a / "probe.txt").write_text("attempt-1")
    paths = [cluster.SharedPath("the input", str(a), cluster.path_signature(str(a))),
             cluster.SharedPath("the output", str(a / "probe.txt"), "attempt-1", probe=True)]
    same = cluster.node_view(paths, [("models.text", "json")])
    elsewhere = {"paths": {str(a): "missing", str(a / "probe.txt"): "missing"}, "modules": {"json": False}}
    assert cluster.shared_problems(paths, [("models.text", "json")], {"n1" * 10: same}) == []
    assert cluster.shared_problems(paths, [("models.text", "json")], {"n2" * 10: elsewhere}) == [
        f"the input {a} is not the same on node n2n2n2n2n2n2 (missing there)",
        f"the output {a / 'probe.txt'} is not the same on node n2n2n2n2n2n2 (missing there)",
        "models.text: package 'json' is not installed on node n2n2n2n2n2n2"]


def test_each_node_proves_it_can_write_the_output_and_a_failure_is_named(tmp_path):
    """The probe a node writes into an object-storage output's staging folder, as its workers
    write clip files; a node that cannot gets the night refused before any model loads: exit 2
    for credentials or access, 1 for anything else of the store."""
    from mmbatch.errors import OutputError, StorageAccessError
    from mmbatch.pipeline.run import _probe_failure

    (tmp_path / "a-file").write_text("")
    (tmp_path / "staging").mkdir()  # a bucket's prefix needs no folder; a local one does
    view = cluster.node_view([], [], (str(tmp_path / "staging" / "probe-1-n1.txt"), {}))
    assert view["output"] == "" and (tmp_path / "staging" / "probe-1-n1.txt").read_bytes() == b"probe"
    reason = cluster.write_probe(str(tmp_path / "a-file" / "probe.txt"), {})  # under a file: cannot be written
    assert reason.split(":")[0] in ("NotADirectoryError", "FileExistsError", "FileNotFoundError"), reason
    plan = type("Plan", (), {"output_uri": "s3://key:hidden@bucket/out"})()
    denied = _probe_failure("NoCredentialsError: Unable to locate credentials", 2, 3, plan)
    assert isinstance(denied, StorageAccessError) and "run.worker_env" in str(denied)
    assert "(2 of 3 nodes: NoCredentialsError" in str(denied) and "hidden" not in str(denied)
    other = _probe_failure("ConnectionError: the store did not answer", 1, 3, plan)
    assert isinstance(other, OutputError) and not isinstance(other, StorageAccessError)


def test_pool_resources_name_node_types():
    cfg = config(decode={"pool": {"num_cpus": 1, "concurrency": [2, 8], "batch_size": 1,
                                  "resources": {"cpu_node": 0.001}}},
                 encoders={"placement": "colocated", "pool": {"num_cpus": 1, "num_gpus": 0.5,
                                                              "resources": {"gpu_node": 0.001}}},
                 output={"write_resources": {"cpu_node": 0.001}})
    from mmbatch.output.writer import WriterArgs
    from mmbatch.pipeline.graph import stage_specs
    from mmbatch.schema import EmbeddingDims

    specs = stage_specs(cfg, EmbeddingDims(0, 0, 8), WriterArgs("/o", {}, "/o/s", "r", "f", EmbeddingDims(0, 0, 8), "{}", "a"))
    assert [(s.name, s.compute) for s in specs] == [("split", "task"), ("decode", "actor"), ("encoders", "actor"),
                                                 ("write", "sink")]
    assert [s.pool.resources for s in specs] == [{"cpu_node": 0.001}, {"cpu_node": 0.001}, {"gpu_node": 0.001},
                                                 {"cpu_node": 0.001}]
    # Two decode actors and one encoder actor at their minimum, plus the largest task (split or write).
    assert pool_demand(specs) == pytest.approx({"CPU": 3.25, "GPU": 0.5, "cpu_node": 0.003, "gpu_node": 0.001})
    problems = check_cluster_fits(specs, {"CPU": 4, "GPU": 1, "cpu_node": 1000}, strict=False)
    assert problems == ["the pools need at least 0.001 gpu_node at their minimum sizes but the cluster has 0 gpu_node "
                        "(no node declares that resource: see pool.resources)"]
    # A local Ray declares every node type the config names, so the same YAML runs on one machine.
    assert local_resources(cfg) == {"cpu_node": 1000.0, "gpu_node": 1000.0}
    # A pool that reserves memory (pool.memory_gb: Ray's logical memory) counts it, in GiB when it does not fit.
    held = stage_specs(config(encoders={"placement": "colocated", "pool": {"memory_gb": 3}}), EmbeddingDims(0, 0, 8),
                       WriterArgs("/o", {}, "/o/s", "r", "f", EmbeddingDims(0, 0, 8), "{}", "a"))
    assert [s.resources.memory_bytes for s in held if s.name == "encoders"] == [3 * 2**30]
    assert check_cluster_fits(held, {"CPU": 8, "memory": 2 * 2**30}, strict=False) == [
        "the pools need at least 3 GiB of memory at their minimum sizes but the cluster has 2 GiB of memory "
        "(lower pool.memory_gb or pool.concurrency minimums)"]

    # Decode starts with what the cluster holds beside the other pools' minimum (the encoder actor,
    # the largest task): 6 of 7.75 CPUs here, never past its maximum, nor an actor an input.
    def initial(available, inputs=100):
        return {s.name: s.initial_size for s in starting_sizes(specs, available, inputs)}

    assert initial({"CPU": 7.75, "GPU": 1, "cpu_node": 1000, "gpu_node": 1000}) == {
        "split": None, "decode": 6, "encoders": None, "write": None}
    assert initial({"CPU": 64, "GPU": 1, "cpu_node": 1000, "gpu_node": 1000})["decode"] == 8
    assert initial({"CPU": 64, "GPU": 1, "cpu_node": 1000, "gpu_node": 1000}, inputs=3)["decode"] == 3
    assert initial({"CPU": 64, "GPU": 1, "cpu_node": 0.004, "gpu_node": 1})["decode"] == 3  # decode nodes
    assert initial({"CPU": 2, "GPU": 1, "cpu_node": 1000, "gpu_node": 1000})["decode"] == 2  # at least its minimum


def test_pool_resources_are_custom_and_positive():
    with pytest.raises(ConfigError, match=r"resources\['GPU'\]: use num_cpus/num_gpus"):
        config(decode={"pool": {"resources": {"GPU": 1}}})
    with pytest.raises(ConfigError, match=r"resources\['cpu_node'\] must be > 0"):
        config(decode={"pool": {"resources": {"cpu_node": 0}}})


class ExecutionTimeoutError(Exception):  # Ray's names: cluster_failure matches them by name, through its wrapping
    pass


class RayTaskError(Exception):
    def __init__(self, cause):
        super().__init__("task failed")
        self.cause = cause


def test_ray_failures_are_named_with_their_knobs():
    run = config(run={"no_progress_timeout_s": 900}).run
    err = cluster_failure(RayTaskError(ExecutionTimeoutError("no progress")), run)
    assert isinstance(err, ClusterError) and err.exit_code == ExitCode.SYSTEM
    assert "no progress for run.no_progress_timeout_s = 900 s" in str(err)
    assert cluster_failure(RuntimeError("a bug"), run) is None

    class ActorDiedError(Exception):  # Ray's, as it reaches the driver: the worker's traceback as text
        pass

    died = ActorDiedError("The actor died because of an error raised in its creation task ...\nTraceback ...\n"
                          "mmbatch.errors.ConfigError: decode.hwaccel: cuda, but this decode worker cannot open a "
                          "CUDA device (Operation not permitted): give the decode pool GPU nodes")
    err = cluster_failure(died, run)
    assert isinstance(err, ConfigError) and err.exit_code == ExitCode.USAGE
    assert str(err) == ("a worker refused the configuration: decode.hwaccel: cuda, but this decode worker cannot "
                        "open a CUDA device (Operation not permitted): give the decode pool GPU nodes")


def test_an_attached_night_waits_for_room_for_every_pool_at_once_then_gives_it_back(ray_cluster):
    """The session's Ray (2 CPUs, 1 GPU) as the cluster: pools whose minimum fits are placed at once
    and their placement group removed before they start; a pool that needs 2 GPUs is refused after
    run.placement_timeout_s, naming the demand and the knob."""
    import time

    from ray.util import placement_group_table

    from mmbatch.pipeline.graph import stage_specs
    from mmbatch.pipeline.ray_runtime import wait_until_placeable
    from mmbatch.schema import EmbeddingDims

    dims = EmbeddingDims(0, 0, 32)
    fits = config(decode={"pool": {"num_cpus": 0.5}}, models={"text": {**TEXT, "pool": {"num_cpus": 0.25}}},
                  fusion={"pool": {"num_cpus": 0.25, "num_gpus": 1}})
    wait_until_placeable(stage_specs(fits, dims), fits.run)
    assert {g["state"] for g in placement_group_table().values()} <= {"REMOVED"}
    too_big = config(fusion={"pool": {"num_cpus": 0.5, "num_gpus": 2}}, run={"placement_timeout_s": 1})
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"the pools' minimum \(.*2 GPU\) could not be placed within "
                                           r"run.placement_timeout_s = 1 s") as err:
        wait_until_placeable(stage_specs(too_big, dims), too_big.run)
    assert err.value.exit_code == ExitCode.SYSTEM and time.monotonic() - started < 30
    assert {g["state"] for g in placement_group_table().values()} <= {"REMOVED"}


def test_restarts_wait_by_default():
    run = config().run
    assert run.actor_restarts == -1 and run.actor_init_deaths == 5
    assert run.placement_timeout_s == 600 and run.no_progress_timeout_s == 1800


def test_execution_settings_follow_the_run_config():
    from ray.data import DataContext

    from mmbatch.pipeline.ray_runtime import configure_execution

    ctx = DataContext.get_current()
    saved = (ctx.wait_for_min_actors_s, ctx.max_consecutive_actor_init_deaths, ctx.execution_no_progress_timeout_s,
             ctx.op_resource_reservation_enabled)
    try:
        run = config(run={"placement_timeout_s": 12.5, "actor_init_deaths": 7, "no_progress_timeout_s": 60}).run
        configure_execution(run)  # the pools start side by side: Ray Data's own wait would start them in turn
        assert (ctx.wait_for_min_actors_s, ctx.max_consecutive_actor_init_deaths,
                ctx.execution_no_progress_timeout_s) == (-1, 7, 60)
    finally:
        (ctx.wait_for_min_actors_s, ctx.max_consecutive_actor_init_deaths, ctx.execution_no_progress_timeout_s,
         ctx.op_resource_reservation_enabled) = saved


def test_a_local_ray_keeps_idle_workers_and_an_attached_one_is_left_alone(monkeypatch):
    """Task workers that stay alive are not started again (and re-import Ray and pyarrow) for every
    split and write task, and Ray's own metrics (no dashboard to show them) are not recorded; on a
    cluster its own nodes' settings decide."""
    import ray

    from mmbatch.pipeline.ray_runtime import start_ray

    calls = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray("INFO", num_cpus=2)
    start_ray("INFO", num_cpus=16)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    start_ray("INFO", runtime_env={"env_vars": {}})
    assert [c.get("_system_config") for c in calls] == [{"num_workers_soft_limit": 8, "enable_metrics_collection": False},
                                                        {"num_workers_soft_limit": 16, "enable_metrics_collection": False},
                                                        None]


def test_a_local_ray_that_fails_to_start_is_started_afresh_once(caplog):
    """A busy machine can kill a local raylet while it waits for its agents. The job stops what
    the failed attempt started (by PID) and starts a fresh Ray once; twice failed is exit 1."""
    import subprocess
    import sys

    from mmbatch.pipeline.ray_runtime import start_local_ray

    leftovers, calls = [], []

    def init_that_fails(times: int):
        def init():
            calls.append(1)
            if len(calls) <= times:  # what a failed ray.init leaves: processes of its own
                leftovers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
                raise Exception("The current node timed out during startup. This could happen because ...")
        return init

    start_local_ray(init_that_fails(1))
    assert len(calls) == 2 and leftovers[0].wait(timeout=15) is not None  # stopped, not left running
    assert "the local Ray did not start (Exception: The current node timed out during startup" in caplog.text
    assert "attempt 2 of 2" in caplog.text

    calls.clear()
    with pytest.raises(ClusterError, match=r"did not start in 2 attempts: Exception: The current node timed out") as err:
        start_local_ray(init_that_fails(2))
    assert err.value.exit_code == ExitCode.SYSTEM and len(calls) == 2
    assert all(p.wait(timeout=15) is not None for p in leftovers)
