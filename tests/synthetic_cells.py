"""Tiny labelled cell images drawn in code, for training tests that must finish in seconds.

Each class gets its own nucleus colour and shape on a pale field, so even one epoch of a small
network has something to learn, and nothing here depends on the shared datasets.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASS_STYLES = {
    "EOSINOPHIL": ((200, 90, 60), "lobes"),
    "LYMPHOCYTE": ((60, 40, 150), "round"),
    "MONOCYTE": ((110, 70, 160), "kidney"),
    "NEUTROPHIL": ((150, 50, 170), "lobes"),
}


def draw_cell(class_name, rng, size=(320, 240)):
    colour, shape = CLASS_STYLES[class_name]
    width, height = size
    field = np.full((height, width, 3), (235, 200, 205), dtype=np.uint8)
    field = np.clip(field + rng.integers(-12, 12, field.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(field)
    draw = ImageDraw.Draw(image)
    cx, cy = width // 2 + int(rng.integers(-10, 10)), height // 2 + int(rng.integers(-10, 10))
    draw.ellipse((cx - 34, cy - 34, cx + 34, cy + 34), fill=(225, 170, 190))
    if shape == "round":
        draw.ellipse((cx - 22, cy - 22, cx + 22, cy + 22), fill=colour)
    elif shape == "kidney":
        draw.ellipse((cx - 26, cy - 18, cx + 26, cy + 18), fill=colour)
        draw.ellipse((cx - 8, cy - 26, cx + 8, cy - 6), fill=(225, 170, 190))
    else:
        for dx in (-16, 0, 16):
            draw.ellipse((cx + dx - 9, cy - 9, cx + dx + 9, cy + 9), fill=colour)
    return image


def write_cell_folder(root, per_class=4, test_per_class=2, seed=0):
    """root/TRAIN/CLASS/*.jpeg and root/TEST/CLASS/*.jpeg; returns root."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("TRAIN", per_class), ("TEST", test_per_class)):
        for name in CLASS_STYLES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                draw_cell(name, rng).save(folder / f"{name.lower()}_{k}.jpeg", quality=92)
    return root
