"""The quality benchmark's samples: the dev pool is fixed and no reported sample, of any size or
seed, holds a dev snippet (a synthetic corpus: the real one is fetched only by the benchmark)."""

import pandas as pd
import pytest

from benchmarks import quality


@pytest.fixture(scope="module")
def corpus():
    # 3,000 fresh, 3,000 rotten, 1,100 synopses; every 97th row has no text (the real corpus has a few)
    cats = ["fresh"] * 3000 + ["rotten"] * 3000 + ["plot"] * 1100
    texts = [None if i % 97 == 0 else f"snippet {i}" for i in range(len(cats))]
    return pd.DataFrame({"category": cats, "text": texts})


def test_the_dev_pool_is_fixed_and_outside_every_reported_sample(corpus):
    dev = quality.draw(corpus, "dev", 600, 2)
    assert dev["category"].value_counts().to_dict() == quality.DEV_PER_CLASS
    # the same pool whatever --per-class and --seed say: tuning never drifts with the reported sample
    assert list(quality.draw(corpus, "dev", 1500, 5).index) == list(dev.index)
    assert dev["text"].map(quality.has_text).all()
    for n, seed in ((300, 2), (600, 2), (1500, 2), (1500, 9)):
        test = quality.draw(corpus, "test", n, seed)
        assert not set(test.index) & set(dev.index)
        assert test["text"].map(quality.has_text).all()


def test_a_reported_sample_is_a_prefix_of_a_larger_one_and_short_classes_give_what_they_have(corpus):
    small, large = quality.draw(corpus, "test", 300, 2), quality.draw(corpus, "test", 1500, 2)
    for cat in ("fresh", "rotten", "plot"):
        a, b = small[small["category"] == cat].index, large[large["category"] == cat].index
        assert list(b[: len(a)]) == list(a)
    assert small["category"].value_counts().to_dict() == {"fresh": 300, "rotten": 300, "plot": 150}
    # 1,100 synopses, 12 without text (every 97th row), 500 in the dev pool: 588 left, not the 750 asked
    counts = large["category"].value_counts().to_dict()
    assert counts == {"fresh": 1500, "rotten": 1500, "plot": 588}


def test_speech_windows_counts_cut_sentences_and_words_by_video():
    from benchmarks import speech_windows

    videos = [{"video_id": "f", "category": "fresh", "said": [(0.5, 4.0, "a fine film"), (4.6, 9.0, "truly great")]},
              {"video_id": "r", "category": "rotten", "said": [(1.0, 6.0, "dull and long")]}]
    clips = pd.DataFrame({"video_id": ["f", "f", "r", "r"], "clip_index": [1, 0, 0, 1],
                          "start_s": [4.3, 0.0, 0.0, 5.0], "end_s": [9.5, 4.3, 5.0, 7.0],
                          "transcript": ["truly grate", "a fine film", "dull and", None],
                          "text_valence": [0.5, 0.9, -0.2, None]})
    got = speech_windows.measure(clips, videos)
    # f's boundary at 4.3 s lies in the pause; r's at 5.0 s cuts its sentence (and loses "long")
    assert (got["sentences"], got["sentences_cut"]) == (3, 1)
    assert got["word_error_rate"] == round(2 / 8, 4)  # "grate", and "long" unheard
    assert got["text_valence_auc_fresh_vs_rotten"] == 1.0
    assert got["clip_s"] == {"min": 2.0, "median": 4.65, "max": 5.2}


def test_the_clips_hold_one_line_sentences_in_a_seeded_order_spoken_synopses_by_their_first():
    sample = pd.DataFrame({"category": ["fresh", "plot", "rotten"],
                           "text": ["\nGood  fun.", "A man moves. He finds a job.", "Dull, dull."]})
    written = quality.clip_order(sample, 2, spoken=False)
    spoken = quality.clip_order(sample, 2, spoken=True)
    assert list(written["category"]) == list(spoken["category"])  # the same order either way
    assert sorted(written["text"]) == ["A man moves. He finds a job.", "Dull, dull.", "Good fun."]
    assert sorted(spoken["text"]) == ["A man moves.", "Dull, dull.", "Good fun."]
    assert list(quality.clip_order(sample, 2, spoken=True)["text"]) == list(spoken["text"])  # seeded
