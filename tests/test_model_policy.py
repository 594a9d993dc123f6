"""Code-loading policy and model identity, checked on the driver at start-up."""

import json
import shutil

import pytest

from mmbatch.config import parse_config
from mmbatch.encoders.inspect import inspect_models, model_identities
from mmbatch.errors import ModelLoadError
from mmbatch.models import loading as models


def text_config(source, **enc):
    return parse_config({"models": {"text": {"task": "text_classification", "source": str(source), **enc}}})


@pytest.fixture
def roberta(tmp_path):
    folder = tmp_path / "roberta"
    shutil.copytree(models.resolve_source("tiny:roberta-sentiment"), folder)
    return folder


def test_custom_code_runs_only_when_allowed(roberta):
    cfg = json.loads((roberta / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (roberta / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"models.text: .* ships its own Python code \(auto_map\); it runs only "
                                             r"with models.text.trust_remote_code: true"):
        inspect_models(text_config(roberta))
    assert inspect_models(text_config(roberta, trust_remote_code=True)).text == 32


def test_pickle_weights_are_refused_unless_allowed(roberta):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(roberta)
    for p in roberta.glob("*.safetensors"):
        p.unlink()
    import torch

    torch.save(model.state_dict(), roberta / "pytorch_model.bin")  # the classic pickle checkpoint
    with pytest.raises(ModelLoadError, match=r"has only pickle-based weights \(pytorch_model.bin\).*"
                                             r"set models.text.allow_pickle: true"):
        inspect_models(text_config(roberta))
    assert inspect_models(text_config(roberta, allow_pickle=True)).text == 32
    with pytest.raises(ModelLoadError, match="cannot load"):  # the actor's load refuses it too
        models.load_pretrained(AutoModelForSequenceClassification, str(roberta), None)


def test_identity_follows_content_not_names(roberta):
    before = model_identities(text_config(roberta))["text"]
    assert before.startswith("content:") and model_identities(text_config(roberta))["text"] == before
    cfg = json.loads((roberta / "config.json").read_text())
    (roberta / "config.json").write_text(json.dumps({**cfg, "classifier_dropout": 0.3}))
    after = model_identities(text_config(roberta))["text"]
    assert after != before
    a, b = text_config(roberta), text_config(roberta)
    assert a.fingerprint({"text": before}) != b.fingerprint({"text": after})
    assert model_identities(text_config("tiny:roberta-sentiment"))["text"] == "tiny:roberta-sentiment@v3"


def test_hub_models_that_cannot_be_fetched_are_refused_at_once(monkeypatch, roberta, tmp_path):
    """A hub id that is not in the cache, with the hub out of reach (here: nothing listens on the
    endpoint's port) or HF_HUB_OFFLINE set, is one ModelLoadError naming it, in seconds, not half
    a minute of retries. Folders and presets never ask the hub; a cached model does not either."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # nothing cached
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard: nothing answers
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests' environment sets it
    cfg = parse_config({"models": {"text": {"task": "text_classification", "source": "cardiffnlp/no-such-model"},
                                   "vision": {"task": "image_zero_shot", "source": "tiny:clip"}}})
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"^models.text.source 'cardiffnlp/no-such-model': a Hugging Face hub "
                                             r"model not in this machine's cache, and the hub \(http://127.0.0.1:9\) "
                                             r"cannot be reached: .+; give a local or s3:// folder"):
        model_identities(cfg)
    assert time.monotonic() - t0 < 10
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"not in this machine's cache, and HF_HUB_OFFLINE is set; "):
        model_identities(cfg)
    assert model_identities(text_config(roberta))["text"].startswith("content:")  # a folder: no hub
    assert not models.is_hub_id(str(roberta)) and not models.is_hub_id("s3://b/m") and models.is_hub_id("org/m")
    assert not models.is_hub_id(str(tmp_path / "no-such-folder"))  # a path: a folder not found, not the hub
    snapshot = tmp_path / "hub-cache" / "models--cardiffnlp--no-such-model" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    models.check_hub_reachable({"models.text.source": ("cardiffnlp/no-such-model", None)})  # cached: no error
