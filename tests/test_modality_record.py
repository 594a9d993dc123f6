"""A modality is declared once: a copy of the package gains a toy modality ("scene": a frame
classifier of its own) by touching only its record (mmbatch/modalities.py), its encoder module and
its tiny model (mmbatch/models/tiny.py); then config, inspection, the graph, decode, fusion, the
output schema and a committed night all carry it, and nights that do not configure it keep their
fingerprint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO

RECORD = '''
REGISTRY += (Modality("scene", {"scene_classification": "mmbatch.encoders.scene:SceneEncoder"}, media="frames",
                      label_tasks=frozenset({"scene_classification"}), doc="the clip's setting"),)
'''
ENCODER = '''"""The scene of a clip from its frames: an image classifier whose labels map to sentiment."""

from mmbatch.encoders.vision import ImageClassificationEncoder


class SceneEncoder(ImageClassificationEncoder):
    modality = "scene"
'''
TINY = '''

def _build_vit_scene(out: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    labels = ["negative", "neutral", "positive"]
    cfg = ViTConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, image_size=32,
                    patch_size=16, num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    _seed()
    ViTForImageClassification(cfg).save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "size": {"height": 32, "width": 32}}))


BUILDERS["vit-scene"] = _build_vit_scene
'''
NIGHT = '''
import datetime as dt, json, sys
import numpy as np
from mmbatch.config import load_config, parse_config
from mmbatch.encoders.inspect import inspect_models
from mmbatch.inputs.sources import discover
from mmbatch.night.night import Night
from mmbatch.output.writer import ClipWriterStage
from mmbatch.pipeline.graph import stage_specs
from mmbatch.schema import CLIPS_SCHEMA
from mmbatch.stage import concat_batches

folder, out = sys.argv[1], sys.argv[2]
raw = load_config("pipelines/tiny.yaml").model_dump(mode="json")
unchanged = load_config("pipelines/tiny.yaml").fingerprint({})
raw["models"] = {"vision": raw["models"]["vision"], "scene": {"task": "scene_classification", "source": "tiny:vit-scene"}}
raw["decode"].update(timeout_s=None, split_clips=None)  # decode in this process, one call a video
raw["encoders"]["placement"] = "per_modality"  # a stage a model, as the graph lists them
config = parse_config(raw)
dims = inspect_models(config)
specs = stage_specs(config, dims)
batches = []
for ref in discover(folder):
    row = {k: np.array([v]) for k, v in ref.as_row().items()}
    clips = list(specs[0].build()(row))
    batch = concat_batches(clips)
    for spec in specs[1:]:
        stage = spec.build()
        stage.setup()
        batch = stage(batch)
    batches.append(batch)
night = Night(out, dt.date(2026, 11, 27), config.fingerprint({})).open(discover(folder), dims)
writer = ClipWriterStage(night.writer)
night.ledger.begin()
for batch in batches:
    night.ledger.add_records(writer(batch))
record = night.commit()
clips = night.tables.read_date("clips", dt.date(2026, 11, 27)).to_pylist()
print(json.dumps({"unchanged": unchanged, "stages": [s.name for s in specs], "dims": dims.as_dict(),
                  "columns": CLIPS_SCHEMA.names, "counts": record["counts"], "clips": clips}, default=str))
'''


def test_a_toy_modality_needs_only_its_record_encoder_and_tiny_model(tmp_path, model_cache):
    from mmbatch.config import load_config
    from mmbatch.modalities import SCORED
    from mmbatch.synth import write_video

    src = tmp_path / "src"
    shutil.copytree(REPO / "mmbatch", src / "mmbatch", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "pipelines", src / "pipelines")
    registry = src / "mmbatch" / "modalities.py"
    text = registry.read_text()
    registry.write_text(text.replace("\nBY_NAME = ", RECORD + "BY_NAME = ", 1))  # the record
    (src / "mmbatch" / "encoders" / "scene.py").write_text(ENCODER)  # the encoder
    tiny = src / "mmbatch" / "models" / "tiny.py"
    tiny.write_text(tiny.read_text() + TINY)  # the tiny model
    changed = {str(p.relative_to(tmp_path / "src")) for p in (src / "mmbatch").rglob("*.py")
               if not (REPO / p.relative_to(src)).exists() or (REPO / p.relative_to(src)).read_text() != p.read_text()}
    assert changed == {"mmbatch/modalities.py", "mmbatch/encoders/scene.py", "mmbatch/models/tiny.py"}

    write_video(tmp_path / "in" / "v.mp4", seconds=7.0, width=48, height=32, audio=False)  # clips 0-5 s, 5-7 s
    env = {**os.environ, "PYTHONPATH": str(src)}
    r = subprocess.run([sys.executable, "-c", NIGHT, str(tmp_path / "in"), str(tmp_path / "out")], cwd=src, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])

    assert got["unchanged"] == load_config(REPO / "pipelines" / "tiny.yaml").fingerprint({})  # nothing rescored
    assert got["stages"] == ["decode", "vision", "scene", "fusion"]
    others = {m: 0 for m in SCORED}  # the product's other modalities, not configured here
    assert got["dims"] == {**others, "vision": 32, "scene": 24, "fused": 56}
    for column in ("scene_error", "has_scene", "scene_valence", "fusion_weight_scene", "scene_embedding"):
        assert column in got["columns"]
    assert got["counts"]["scored"] == 1 and got["counts"]["clips"] == len(got["clips"]) == 2
    for clip in got["clips"]:
        assert clip["status"] == "ok" and clip["has_scene"] and clip["has_video"] and not clip["has_text"]
        assert len(clip["scene_embedding"]) == 24 and len(clip["fused_embedding"]) == 56
        assert -1 <= clip["scene_valence"] <= 1
        assert abs(clip["fusion_weight_scene"] + clip["fusion_weight_vision"] - 1) < 1e-5
        assert all(clip[f"fusion_weight_{m}"] is None for m in SCORED if m != "vision")
