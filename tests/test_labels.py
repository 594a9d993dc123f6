import numpy as np
import pytest

from mmbatch.encoders.labels import label_matrix, to_sentiment
from mmbatch.errors import ModelLoadError


def classes(id2label, overrides=None):
    m = label_matrix(id2label, overrides or {}, "m")
    names = np.array(["negative", "neutral", "positive", "ignore"])
    return [names[row.argmax()] if row.any() else "ignore" for row in m]


def test_emotion_labels_map_by_default():
    assert classes({0: "neu", 1: "hap", 2: "ang", 3: "sad"}) == ["neutral", "positive", "negative", "negative"]
    assert classes({0: "Happy", 1: "Disgust", 2: "Fear", 3: "Surprise", 4: "Neutral"}) == [
        "positive", "negative", "negative", "ignore", "neutral"]


def test_star_ratings_and_generic_labels():
    assert classes({i: f"{i + 1} star{'s' if i else ''}" for i in range(5)}) == [
        "negative", "negative", "neutral", "positive", "positive"]
    assert classes({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}) == ["negative", "neutral", "positive"]
    assert classes({0: "LABEL_0", 1: "LABEL_1"}) == ["negative", "positive"]


def test_overrides_win_and_unmappable_is_an_error():
    assert classes({0: "meh", 1: "yay"}, {"meh": "negative", "yay": "positive"}) == ["negative", "positive"]
    with pytest.raises(ModelLoadError, match=r"cannot be mapped.*\['meh'\].*label_map"):
        label_matrix({0: "meh", 1: "positive"}, {}, "m")


def test_single_class_mapping_is_rejected():
    with pytest.raises(ModelLoadError, match="fewer than two"):
        label_matrix({0: "happy", 1: "joy"}, {}, "m")


def test_to_sentiment_sums_and_renormalises_ignored():
    m = label_matrix({0: "neu", 1: "hap", 2: "sad", 3: "surprise"}, {}, "m")
    out = to_sentiment(np.array([[0.1, 0.4, 0.3, 0.2]]), m)
    np.testing.assert_allclose(out, [[0.3 / 0.8, 0.1 / 0.8, 0.4 / 0.8]], rtol=1e-6)
