"""Deployment files are checked with the tools that will read them."""

from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"


def test_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(cfg))
    types = cfg["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}  # the driver's node runs no tasks
    assert "g6" in types["gpu_encode"]["node_config"]["InstanceType"]


def test_schema_validation_catches_typos():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    cfg["max_wrkers"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_wrkers"):
        validate_config(prepare_config(cfg))


def test_rayjob_entrypoint_runs_the_job():
    job = yaml.safe_load((INFRA / "kuberay-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("python jobs/score_videos.py")


def test_nodes_install_from_pyproject_not_a_copy_of_the_pins():
    cfg = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    assert cfg["file_mounts"] == {"~/mmbatch": "."}
    setup = " ".join(cfg["setup_commands"])
    assert "pip install -e ~/mmbatch" in setup and "==" not in setup


def test_node_types_declare_what_the_production_pools_ask_for():
    """decode (and split) only on CPU nodes, the models and fusion only on GPU nodes: in the cluster
    launcher's node types and in the KubeRay worker groups."""
    import json

    from mmbatch.config import load_config

    cfg = load_config(INFRA.parent / "pipelines" / "video_sentiment.yaml")
    model_pools = [getattr(cfg.models, m).pool for m in ("vision", "speech", "audio", "text")] + [cfg.fusion.pool]
    assert set(cfg.decode.pool.resources) == {"cpu_node"}
    assert all(set(p.resources) == {"gpu_node"} for p in model_pools)  # fusion too: it runs beside the models
    launcher = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())["available_node_types"]
    assert launcher["cpu_decode"]["resources"] == {"cpu_node": 1000}
    assert launcher["gpu_encode"]["resources"] == {"gpu_node": 1000}
    groups = yaml.safe_load((INFRA / "kuberay-rayjob.yaml").read_text())["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    declared = {g["groupName"]: json.loads(json.loads(g["rayStartParams"]["resources"])) for g in groups}
    assert declared == {"cpu-decode": {"cpu_node": 1000}, "gpu-encode": {"gpu_node": 1000}}


def test_the_cluster_image_installs_this_project_on_the_pinned_ray_and_python():
    """infra/Dockerfile (built by users: it needs the network): Ray's own image of the Ray minor
    version and Python that pyproject pins, this project installed from its pyproject.toml."""
    import re

    import tomllib

    project = tomllib.loads((INFRA.parent / "pyproject.toml").read_text())["project"]
    ray_pin = next(d for d in project["dependencies"] if d.startswith("ray["))
    minor = re.search(r"==(\d+\.\d+)", ray_pin).group(1)
    text = (INFRA / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=rayproject/ray:(\d+\.\d+)\.\d+-py(\d)(\d+)-cpu$", text, re.M)
    from packaging.specifiers import SpecifierSet

    assert base and base.group(1) == minor and f"{base.group(2)}.{base.group(3)}" in SpecifierSet(project["requires-python"])
    assert "FROM ${BASE}" in text and 'pip install --no-cache-dir ".[${EXTRAS}]"' in text and "==" not in text
    extras = re.search(r"^ARG EXTRAS=(.+)$", text, re.M).group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"])
    assert "infra/Dockerfile" in (INFRA / "kuberay-rayjob.yaml").read_text()
