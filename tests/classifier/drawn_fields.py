"""Smear-like 240x320 fields drawn in code, one class-coloured nucleus near the centre.

Shared by the dataset and training tests: the detector finds these nuclei, so the same fields
exercise the cell-mode preparation as well as the folder-per-class layout.
"""

from pathlib import Path

import cv2
import numpy as np

from classifier.labels import FOUR_CLASSES

COLOURS = {
    "EOSINOPHIL": (150, 60, 170),
    "LYMPHOCYTE": (90, 60, 200),
    "MONOCYTE": (120, 90, 190),
    "NEUTROPHIL": (110, 50, 150),
}


def draw_field(class_name, seed):
    """A 240x320 smear-like field: pale background, red cells, a purple nucleus near the centre."""
    rng = np.random.default_rng(seed)
    image = np.full((240, 320, 3), (225, 215, 220), np.uint8)
    for _ in range(12):
        centre = (int(rng.integers(0, 320)), int(rng.integers(0, 240)))
        cv2.circle(image, centre, 24, (215, 150, 150), -1)
    centre = (160 + int(rng.integers(-10, 10)), 120 + int(rng.integers(-10, 10)))
    cv2.circle(image, centre, 30, (200, 180, 220), -1)
    cv2.circle(image, centre, 18, COLOURS[class_name], -1)
    return image


def write_split(root, split, per_class, start=0):
    for k, name in enumerate(FOUR_CLASSES):
        folder = Path(root) / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bgr = cv2.cvtColor(draw_field(name, start + 100 * k + i), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"_{i}_{k}.jpeg"), bgr)
