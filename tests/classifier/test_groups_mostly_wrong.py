"""The per-photograph breakdown that the classifier benchmarks print."""

import numpy as np

from classifier.dataset import LabelledImage
from classifier.metrics import groups_mostly_wrong


def test_groups_whose_copies_are_mostly_wrong_are_listed_worst_first():
    names = ["EOSINOPHIL", "NEUTROPHIL"]
    rows = (
        [("G1", "EOSINOPHIL", 1)] * 6  # all 6 copies called NEUTROPHIL
        + [("G2", "NEUTROPHIL", 1)] * 3  # all right
        + [("G3", "NEUTROPHIL", 0)] * 2 + [("G3", "NEUTROPHIL", 1)]  # 1 of 3 right
        + [("G4", "EOSINOPHIL", 0)] * 2 + [("G4", "EOSINOPHIL", 1)] * 2  # half right: not listed
    )
    images = [
        LabelledImage(f"{k}.jpeg", label, "TEST", group) for k, (group, label, _) in enumerate(rows)
    ]
    y = np.array([names.index(label) for _, label, _ in rows])
    probabilities = np.eye(2)[[called for _, _, called in rows]] * 0.8 + 0.1

    groups, worst = groups_mostly_wrong(images, probabilities, y, names)

    assert groups == 4
    assert [row["group"] for row in worst] == ["G1", "G3"]
    assert worst[0] == {
        "group": "G1", "label": "EOSINOPHIL", "copies": 6, "share_of_test": 6 / 16,
        "accuracy": 0.0, "mostly_called": "NEUTROPHIL",
    }
    assert worst[1]["accuracy"] == 1 / 3 and worst[1]["mostly_called"] == "EOSINOPHIL"


def test_a_group_of_two_cell_types_is_judged_per_type_and_named_by_its_commonest_wrong_call():
    names = ["LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    rows = (
        [("G7", "LYMPHOCYTE", 0)] * 5  # the group's lymphocyte photograph: all right
        + [("G7", "MONOCYTE", 1)] * 2 + [("G7", "MONOCYTE", 0)] * 3  # its monocyte: 2 of 5 right
        + [("G8", "NEUTROPHIL", 2)] * 3 + [("G8", "NEUTROPHIL", 0)] * 2 + [("G8", "NEUTROPHIL", 1)] * 2
    )
    images = [
        LabelledImage(f"{k}.jpeg", label, "TEST", group) for k, (group, label, _) in enumerate(rows)
    ]
    y = np.array([names.index(label) for _, label, _ in rows])
    probabilities = np.eye(3)[[called for _, _, called in rows]]

    groups, worst = groups_mostly_wrong(images, probabilities, y, names)

    assert groups == 2
    # Not "G7 LYMPHOCYTE, 50% right": the lymphocyte is right, the monocyte mostly is not.
    assert [(row["group"], row["label"], row["copies"]) for row in worst] == [
        ("G8", "NEUTROPHIL", 7), ("G7", "MONOCYTE", 5)  # 4 wrong copies before 3
    ]
    # 3 of 7 right: the commonest call is the right one, the commonest wrong one is a tie -> first.
    assert worst[0]["accuracy"] == 3 / 7 and worst[0]["mostly_called"] == "LYMPHOCYTE"
    assert worst[1]["mostly_called"] == "LYMPHOCYTE"
