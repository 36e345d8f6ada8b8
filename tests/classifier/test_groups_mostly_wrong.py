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
        LabelledImage(f"{k}.jpeg", label, label, "TEST", group) for k, (group, label, _) in enumerate(rows)
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
