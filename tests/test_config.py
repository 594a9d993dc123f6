from pathlib import Path

import pytest

from mmbatch.config import load_config, parse_config, redact
from mmbatch.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
MINIMAL = {"models": {"text": {"task": "text_classification", "source": "tiny:roberta-sentiment"}}}


def test_defaults_fill_every_knob():
    cfg = parse_config(MINIMAL)
    assert cfg.clips.window_s == 10.0 and cfg.clips.stride_s == 10.0 and cfg.clips.min_clip_s == 1.0
    assert cfg.decode.sample_rate == 16000
    assert cfg.run.max_failed_fraction == 0.2


def test_unknown_key_is_named_with_the_key_it_is_near():
    with pytest.raises(ConfigError, match=r"clips\.windw_s: unknown key \(did you mean 'window_s'\?\)$"):
        parse_config({**MINIMAL, "clips": {"windw_s": 3}})
    with pytest.raises(ConfigError, match=r"models\.text\.sorce: unknown key \(did you mean 'source'\?\)"):
        parse_config({"models": {"text": {**MINIMAL["models"]["text"], "sorce": "x"}}})
    with pytest.raises(ConfigError, match=r"  clip: unknown key \(did you mean 'clips'\?\)"):
        parse_config({**MINIMAL, "clip": {}})
    with pytest.raises(ConfigError, match=r"decode\.pool\.gpus: unknown key \(did you mean 'num_gpus'\?\)"):
        parse_config({**MINIMAL, "decode": {"pool": {"gpus": 1}}})
    with pytest.raises(ConfigError, match=r"clips\.zzz: unknown key$"):  # nothing near: nothing guessed
        parse_config({**MINIMAL, "clips": {"zzz": 3}})


def test_task_must_fit_modality():
    with pytest.raises(ConfigError, match=r"models\.vision\.task must be one of \['image_classification', 'image_zero_shot'\]"):
        parse_config({"models": {"vision": {"task": "text_classification", "source": "x"}}})


def test_a_setting_the_task_does_not_read_is_refused():
    with pytest.raises(ConfigError, match="temperature is for text_zero_shot models only; image_zero_shot does not"):
        parse_config({"models": {"vision": {"task": "image_zero_shot", "source": "tiny:clip", "temperature": 0.01}}})
    with pytest.raises(ConfigError, match="hypotheses is for speech_recognition models only; text_classification does not"):
        parse_config({"models": {"text": {**MINIMAL["models"]["text"], "hypotheses": 2}}})
    speech = {"task": "speech_recognition", "source": "tiny:whisper", "hypotheses": 5, "beam_size": 3}
    with pytest.raises(ConfigError, match=r"hypotheses \(5\) cannot exceed beam_size \(3\): the beam search keeps"):
        parse_config({"models": {**MINIMAL["models"], "speech": speech}})


def test_bad_concurrency_and_label_target():
    with pytest.raises(ConfigError, match="concurrency"):
        parse_config({"models": {"text": {**MINIMAL["models"]["text"], "pool": {"concurrency": [3, 1]}}}})
    with pytest.raises(ConfigError, match="label_map"):
        parse_config({"models": {"text": {**MINIMAL["models"]["text"], "label_map": {"joy": "happy"}}}})


def test_needs_a_scoring_modality():
    with pytest.raises(ConfigError, match="at least one of vision, audio, text"):
        parse_config({"models": {"speech": {"task": "speech_recognition", "source": "tiny:whisper"}}})


def test_fingerprint_ignores_pools_but_not_models():
    base = parse_config(MINIMAL)
    retuned = parse_config({"models": {"text": {**MINIMAL["models"]["text"], "pool": {"batch_size": 7}}},
                            "run": {"max_failed_fraction": 0.5}, "storage_options": {"anon": True}})
    other_model = parse_config({"models": {"text": {**MINIMAL["models"]["text"], "revision": "abc"}}})
    assert base.fingerprint() == retuned.fingerprint()
    assert base.fingerprint() != other_model.fingerprint()


def test_operational_knobs_rescore_nothing():
    base = parse_config(MINIMAL)
    retuned = parse_config({**MINIMAL, "decode": {"timeout_s": 5, "split_clips": 10, "fallback_backend": None,
                                                  "max_pixels": 100, "max_duration_s": 60, "max_clips": 3},
                            "output": {"target_file_mb": 16}, "inputs": {"allowed_roots": ["s3://x/"],
                                                                         "max_sidecar_bytes": 10}})
    assert base.fingerprint({"text": "content:1"}) == retuned.fingerprint({"text": "content:1"})
    scoring = parse_config({**MINIMAL, "decode": {"image_size": 112}})
    assert base.fingerprint() != scoring.fingerprint()
    assert base.fingerprint({"text": "content:1"}) != base.fingerprint({"text": "content:2"})


def test_knobs_added_later_leave_existing_fingerprints_alone():
    """A scoring knob added after nights were scored (`added_scoring`) is hashed only when set
    away from its default: the demo's fingerprint is the one its nights were written with."""
    demo = load_config(REPO / "pipelines" / "demo.yaml")
    assert demo.fingerprint() == "ed5a7624091cf358"  # changes only when a change rescores every night
    raw = demo.model_dump(mode="json")
    speech = raw["models"]["speech"]
    assert (speech["beam_size"], speech["no_repeat_ngram_size"]) == (1, 0)
    assert parse_config(raw).fingerprint() == demo.fingerprint()  # the saved config, defaults spelt out
    assert speech["hypotheses"] == 1
    for knob in ({"beam_size": 5}, {"no_repeat_ngram_size": 3}, {"beam_size": 5, "hypotheses": 5}):
        assert parse_config({**raw, "models": {**raw["models"], "speech": {**speech, **knob}}}).fingerprint() \
            != demo.fingerprint()
    assert raw["clips"]["keyframes_only"] is False and raw["decode"]["skip_loop_filter"] is False
    assert parse_config({**raw, "clips": {**raw["clips"], "keyframes_only": True}}).fingerprint() != demo.fingerprint()
    assert parse_config({**raw, "decode": {**raw["decode"], "skip_loop_filter": True}}).fingerprint() \
        != demo.fingerprint()
    on_gpu = {**raw["decode"], "hwaccel": "cuda", "pool": {**raw["decode"]["pool"], "num_gpus": 0.1}}
    assert parse_config({**raw, "decode": on_gpu}).fingerprint() == demo.fingerprint()  # where, not what
    assert raw["fusion"]["reliability"] == {}  # fusion.reliability: hashed once set, for it changes the fused score
    assert parse_config({**raw, "fusion": {**raw["fusion"], "reliability": {"vision": 0}}}).fingerprint() \
        != demo.fingerprint()


def test_decoder_settings_name_what_they_need():
    with pytest.raises(ConfigError, match=r"decode: decode.hwaccel: cuda decodes on a GPU, so the decode pool must "
                                          r"ask for one: set decode.pool.num_gpus"):
        parse_config({**MINIMAL, "decode": {"hwaccel": "cuda"}})
    for knob in ({"hwaccel": "cuda", "pool": {"num_gpus": 1}}, {"skip_loop_filter": True}):
        name = next(iter(knob))
        with pytest.raises(ConfigError, match=rf"decode.{name} is a setting of the pyav backend; decode.backend is "
                                              rf"'decord' \(set backend: auto, or remove {name}\)"):
            parse_config({**MINIMAL, "decode": {"backend": "decord", **knob}})
        assert getattr(parse_config({**MINIMAL, "decode": knob}).decode, name) == knob[name]
    with pytest.raises(ConfigError, match=r"decode.hwaccel: Input should be 'none' or 'cuda'"):
        parse_config({**MINIMAL, "decode": {"hwaccel": "nvdec"}})


def test_secrets_are_redacted():
    cfg = parse_config({**MINIMAL, "storage_options": {"key": "AKIA123", "secret": "s3cr3t", "anon": False,
                                                       "client_kwargs": {"region_name": "eu-west-1"}}})
    red = cfg.redacted()["storage_options"]
    assert red == {"key": "***", "secret": "***", "anon": False, "client_kwargs": {"region_name": "eu-west-1"}}
    assert redact({"aws_session_token": "t"}) == {"aws_session_token": "***"}


def test_yaml_edge_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_configs_validate():
    for name in ("tiny.yaml", "demo.yaml", "video_sentiment.yaml"):
        load_config(REPO / "pipelines" / name)



def test_snapping_to_pauses_needs_fixed_windows_room_and_audio():
    speech = {"speech": {"task": "speech_recognition", "source": "tiny:whisper"}}
    assert parse_config({"models": {**MINIMAL["models"], **speech}, "clips": {"snap_to_pause_s": 2}}).clips.snap_to_pause_s == 2
    with pytest.raises(ConfigError, match=r"policy 'whole' has none"):
        parse_config({"models": {**MINIMAL["models"], **speech}, "clips": {"policy": "whole", "snap_to_pause_s": 2}})
    with pytest.raises(ConfigError, match=r"under half of window_s and stride_s \(10\)"):
        parse_config({"models": {**MINIMAL["models"], **speech}, "clips": {"snap_to_pause_s": 5}})
    with pytest.raises(ConfigError, match="only an audio or speech model decodes"):
        parse_config({**MINIMAL, "clips": {"snap_to_pause_s": 2}})


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    """Plain YAML keeps the last of two `clips:` blocks, silently resetting the first one's settings."""
    path = tmp_path / "twice.yaml"
    path.write_text("clips:\n  window_s: 4\nmodels:\n  text: {task: text_classification, source: tiny:roberta-sentiment}\n"
                    "clips:\n  stride_s: 2\n")
    with pytest.raises(ConfigError, match=r"line 5: key 'clips' is given twice \(first on line 1\)"):
        load_config(path)
    path.write_text("models:\n  text:\n    task: text_classification\n    task: speech_recognition\n")
    with pytest.raises(ConfigError, match=r"line 4: key 'task' is given twice \(first on line 3\)"):
        load_config(path)


def test_the_published_json_schema_is_current_and_the_shipped_yamls_follow_it():
    """docs/pipeline.schema.json (what YAML editors complete keys from) is the config's own schema,
    regenerated with every change; each shipped pipeline names it and validates against it."""
    import json

    import jsonschema
    import yaml

    from mmbatch.config import config_json_schema

    published = json.loads((REPO / "docs" / "pipeline.schema.json").read_text())
    assert published == json.loads(json.dumps(config_json_schema())), "regenerate docs/pipeline.schema.json"
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        assert path.read_text().startswith("# yaml-language-server: $schema=../docs/pipeline.schema.json\n"), path
        jsonschema.validate(yaml.safe_load(path.read_text()), published)
    with pytest.raises(jsonschema.ValidationError, match="windows_s"):
        jsonschema.validate({"models": {"text": {"task": "text_zero_shot", "source": "x"}},
                             "clips": {"windows_s": 4}}, published)
