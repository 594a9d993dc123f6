"""The benchmarks' quality metrics, on cases worked out by hand."""

import numpy as np

from benchmarks.metrics import auc, macro_f1, word_error_rate, word_errors, words


def test_auc_counts_pairs_and_half_ties():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    # pairs (pos, neg): (2,1) win, (2,2) tie, (2,3) loss, (5,*) 3 wins -> (1 + 0.5 + 3) / 6
    assert auc(np.array([2.0, 5.0]), np.array([1.0, 2.0, 3.0])) == 0.75


def test_macro_f1_averages_the_classes():
    true = np.array([0, 0, 1, 2])
    pred = np.array([0, 1, 1, 2])
    # class 0: tp 1 fn 1 -> 2/3; class 1: tp 1 fp 1 -> 2/3; class 2: 1
    assert np.isclose(macro_f1(true, pred), (2 / 3 + 2 / 3 + 1) / 3)
    assert macro_f1(true, np.array([2, 2, 2, 2])) == (0 + 0 + 2 / 5) / 3


def test_word_error_rate_ignores_case_and_punctuation():
    assert words("It's a well-made, FINE film!") == ["it's", "a", "well", "made", "fine", "film"]
    assert word_error_rate("A fine film.", "a fine film") == 0.0
    assert word_errors("the cat sat", "the bat sat down") == (2, 3)  # one substitution, one insertion
    assert word_errors("the cat sat", "") == (3, 3)
    assert word_error_rate("", "something") == 1.0  # nothing was said: every word heard is an error
