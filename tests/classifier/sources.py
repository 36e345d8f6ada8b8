"""Two tiny labelled sources drawn in code, as two labs would photograph the same kinds of cell.

"field lab": 320x240 fields at the reference scale, like blood-cell-images (classifier.labels'
four types). "crop lab": square crops of one cell, shown 1.5x larger, under a bluer stain and lamp,
and without monocytes, like a single-cell analyser's pictures of a lab that saw none.
"""

from pathlib import Path

import cv2
import numpy as np

from classifier.labels import FOUR_CLASSES
from tests.classifier.drawn_fields import draw_field

CROP_SCALE = 1.5
CROP_SIDE = 200
# Per-channel gains of the crop lab's photographs: bluer, dimmer in red.
CROP_TINT = (0.82, 0.95, 1.08)
CROP_LAB_CLASSES = tuple(name for name in FOUR_CLASSES if name != "MONOCYTE")


def draw_crop(class_name, seed):
    """A square crop of a drawn field, magnified CROP_SCALE times and tinted CROP_TINT."""
    field = draw_field(class_name, seed)
    larger = cv2.resize(field, None, fx=CROP_SCALE, fy=CROP_SCALE, interpolation=cv2.INTER_LINEAR)
    height, width = larger.shape[:2]
    y0, x0 = (height - CROP_SIDE) // 2, (width - CROP_SIDE) // 2
    crop = larger[y0 : y0 + CROP_SIDE, x0 : x0 + CROP_SIDE].astype(np.float32)
    return np.clip(crop * np.array(CROP_TINT, np.float32), 0, 255).astype(np.uint8)


def _write(folder, image):
    folder.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_source(root, draw, classes, counts, start=0):
    """root/SPLIT/CLASS/*.png for each (split, images per class) of counts; returns root."""
    root = Path(root)
    for split, per_class in counts.items():
        for k, name in enumerate(classes):
            for i in range(per_class):
                seed = start + 1000 * (split == "TEST") + 100 * k + i
                _write(root / split / name / f"{name.lower()}_{i}.png", draw(name, seed))
    return root


def write_two_sources(root, train=6, test=2):
    """(field lab folder, crop lab folder) under root."""
    counts = {"TRAIN": train, "TEST": test}
    fields = write_source(Path(root) / "field-lab", draw_field, FOUR_CLASSES, counts)
    crops = write_source(Path(root) / "crop-lab", draw_crop, CROP_LAB_CLASSES, counts, start=500)
    return fields, crops
