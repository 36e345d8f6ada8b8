import json

import numpy as np
import pytest

from classifier.calibration import fit_temperature, sigmoid_to_logits, softmax
from classifier.metrics import (
    binary_from_four,
    binary_labels,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    format_metrics,
    format_review_flagging,
    review_flagging,
    roc_auc,
)

NAMES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def one_hot_probabilities(predicted, n=4, confidence=0.7):
    rest = (1 - confidence) / (n - 1)
    p = np.full((len(predicted), n), rest)
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_metrics_match_a_hand_computed_confusion_matrix():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 1, 1, 2, 3, 3, 3, 3]
    # rows true, columns predicted, counted by hand
    expected = [[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 2], [0, 0, 0, 2]]
    assert confusion_matrix(y_true, y_pred, 4).tolist() == expected
    m = classification_metrics(y_true, one_hot_probabilities(y_pred), NAMES)
    assert m["confusion_matrix"] == expected
    assert m["accuracy"] == pytest.approx(7 / 10)
    recalls = [2 / 3, 1.0, 1 / 3, 1.0]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert m["per_class"]["LYMPHOCYTE"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["NEUTROPHIL"]["precision"] == pytest.approx(2 / 4)
    assert m["per_class"]["MONOCYTE"]["f1"] == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert m["per_class"]["EOSINOPHIL"]["support"] == 3
    # every confidence is 0.7 and accuracy is 0.7: perfectly calibrated
    assert m["ece"] == pytest.approx(0.0, abs=1e-9)
    json.dumps(m)
    text = format_metrics(m, "hand")
    assert "NEUTROPHIL" in text and "confusion matrix" in text
    assert "skipped" not in text
    # train_cli printed a split's figures without the files it could not decode.
    named = [{"path": "/lab/TEST/NEUTROPHIL/a.jpg", "reason": "not an image, or damaged"}]
    text = format_metrics({**m, "skipped_files": 2, "skipped_named": named})
    assert "n=10  accuracy=0.7000  balanced" in text and "(2 files skipped: named below)" in text
    assert text.endswith("2 files skipped, left out of these figures:\n"
                         "  /lab/TEST/NEUTROPHIL/a.jpg: not an image, or damaged\n  and 1 more not named")


def test_review_flagging_counts_flagged_cells_caught_errors_and_unflagged_accuracy():
    # Five cells: confident right, confident wrong, unsure right, unsure wrong, very unsure wrong.
    y = [0, 0, 1, 1, 0]
    p = [[0.95, 0.05], [0.1, 0.9], [0.3, 0.7], [0.65, 0.35], [0.45, 0.55]]
    at_08, at_06 = review_flagging(y, p, (0.8, 0.6))
    # Under 0.8: cells 3, 4, 5 flagged; 2 of the 3 errors among them; unflagged 1 of 2 right.
    assert at_08 == {"threshold": 0.8, "flagged_share": 0.6, "errors_caught": 2 / 3,
                     "errors": 3, "unflagged_accuracy": 0.5}
    # Under 0.6 only cell 5 (0.55): 1 of 3 errors; unflagged 2 of 4 right.
    assert at_06 == {"threshold": 0.6, "flagged_share": 0.2, "errors_caught": 1 / 3,
                     "errors": 3, "unflagged_accuracy": 0.5}


def test_a_sites_review_threshold_joins_the_standard_ones_once_and_is_marked():
    y = [0, 0, 1, 1, 0]
    p = [[0.95, 0.05], [0.1, 0.9], [0.3, 0.7], [0.65, 0.35], [0.45, 0.55]]
    names = ("MONONUCLEAR", "POLYNUCLEAR")
    own = classification_metrics(y, p, names, review_thresholds=[0.85])["review_flagging"]
    assert [row["threshold"] for row in own] == [0.6, 0.7, 0.8, 0.85, 0.9, 0.95]
    # 0.1 * 8 is 0.8000000000000002: the same threshold, not a seventh row.
    same = classification_metrics(y, p, names, review_thresholds=[0.1 * 8])["review_flagging"]
    assert [row["threshold"] for row in same] == [0.6, 0.7, 0.8, 0.9, 0.95]
    marked = [line for line in format_review_flagging(same, 0.1 * 8) if "site's threshold" in line]
    assert marked == ["  under 0.80: 60.0% of cells flagged, 66.7% of the errors among them, "
                      "unflagged calls 50.0% right  <- the site's threshold"]
    # Every cell flagged leaves no unflagged call to be right or wrong (stored as 1.0).
    every = review_flagging([0, 1], [[0.6, 0.4], [0.7, 0.3]], (0.9,))
    assert format_review_flagging(every)[-1] == (
        "  under 0.90: 100.0% of cells flagged, 100.0% of the errors among them, no call left unflagged")


def test_a_flag_with_no_error_to_catch_says_so_rather_than_catching_all_of_them():
    """Every call right: the stored share of errors caught is 1.0, which read "100.0% of the errors
    among them" where there were none."""
    none_wrong = review_flagging([0, 1], [[0.6, 0.4], [0.3, 0.7]], (0.65, 0.9))
    assert [row["errors"] for row in none_wrong] == [0, 0]
    assert format_review_flagging(none_wrong)[1:] == [
        "  under 0.65: 50.0% of cells flagged, no errors to catch, unflagged calls 100.0% right",
        "  under 0.90: 100.0% of cells flagged, no errors to catch, no call left unflagged"]
    # A row stored before errors were counted reads as it did.
    stored = {"threshold": 0.9, "flagged_share": 0.5, "errors_caught": 1.0, "unflagged_accuracy": 1.0}
    assert "100.0% of the errors among them" in format_review_flagging([stored])[1]


def test_expected_calibration_error_of_overconfident_predictions():
    p = one_hot_probabilities([0, 1, 2, 3], confidence=0.9)
    assert expected_calibration_error(p, [0, 1, 0, 0]) == pytest.approx(0.9 - 0.5)


def test_rank_based_roc_auc_with_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1], [0.1, 0.2]) is None


def test_binary_grouping_sums_four_class_columns():
    p = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert binary_from_four(p, NAMES)[0].tolist() == pytest.approx([0.5, 0.5])
    assert binary_labels([0, 1, 2, 3], NAMES).tolist() == [1, 0, 0, 1]
    m = classification_metrics([0, 1], [[0.3, 0.7], [0.8, 0.2]], ("MONONUCLEAR", "POLYNUCLEAR"))
    assert m["roc_auc"] == pytest.approx(0.0)


def test_temperature_scaling_recovers_an_overconfident_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 4)) * 2
    y = np.array([rng.choice(4, p=row) for row in softmax(true_logits)])
    fitted = fit_temperature(true_logits * 3.0, y)
    assert fitted == pytest.approx(3.0, rel=0.15)
    assert softmax(sigmoid_to_logits([0.8]))[0, 1] == pytest.approx(0.8)
