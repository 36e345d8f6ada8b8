"""How a classifier holds up when the same cells are photographed as another lab would.

    python bench/shifts.py [--model-dir DIR] [--data DIR ...] [--per-class N] [--seed S]
                           [--split validation]

No other lab's photographs ship with the project, and the hidden set from further labs is scored
only through the site. What can be measured here is each way a lab's photographs differ from the
training labs' taken one at a time: the same TEST cells (up to N per type, drawn with a seed)
magnified more or less, cropped to the cell, through a warmer or colder camera, exposed darker or
brighter, out of focus, compressed harder, stained heavier or paler. For each change and source it
prints, beside the photographs as they are: accuracy over the network's types the source holds,
over the four types every source shares, the share of photographs with a quality warning, the
share of cells flagged for review (as the site flags them: a doubtful call, an unfamiliar cell, or
a photograph that warns), the share of the errors the flag catches, and the median of the
detector's scale reading against what it should read (1.00: the red-cell ruler followed the
change; 1.4 for a 1.4x magnification) with the share of readings more than 20% off.

The cells go through what the site does with a single-cell photograph: the detector's red-cell
ruler and the leukocyte nearest the centre, the served network (int8 LiteRT) and its calibrated
probabilities and out-of-distribution score, with a second look at other magnifications where the
network is unsure (classifier.second_look).

``--split validation`` draws the cells from the network's own validation split instead (rebuilt
from its metadata, as a held-out run's calibration is), so that a change of recipe can be chosen
on these shifts without reading TEST.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from classifier import dataset, detection, ood, second_look  # noqa: E402
from classifier.inference import CellClassifier  # noqa: E402
from classifier.labels import FOUR_CLASSES  # noqa: E402
from classifier.model_folder import BUNDLED_MODELS_DIR  # noqa: E402
from classifier.quality import assess_quality  # noqa: E402
from classifier.runtimes import quiet_tensorflow_startup  # noqa: E402
from classifier.training.evaluation import restricted  # noqa: E402
from classifier.training.held_out import rebuilt_split  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
DEFAULT_SOURCES = (DATASETS / "blood-cell-images", DATASETS / "pbc")
DEFAULT_MODEL_DIR = BUNDLED_MODELS_DIR / "leukonet-gn-8class"


@dataclass(frozen=True)
class Shift:
    """One way another lab's photograph of a cell differs; ``magnification`` is what the
    detector's scale reading should be multiplied by (1.0 where the change keeps the scale)."""

    name: str
    change: object  # rgb uint8 -> rgb uint8
    magnification: float = 1.0


def _resized(factor):
    def change(rgb):
        height, width = rgb.shape[:2]
        size = (max(8, round(width * factor)), max(8, round(height * factor)))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        return cv2.resize(rgb, size, interpolation=interpolation)

    return change


def _cropped_around_cell(margin):
    """A lab's own crop of one cell: a square margin times the detected cell's box, on the cell
    nearest the centre (the labelled one), so the red cells around it are mostly cut away."""

    def change(rgb):
        cell = dataset.cell_nearest_centre(detection.detect_leukocytes(rgb).cells, rgb.shape)
        if cell is None:
            return rgb
        x0, y0, x1, y1 = cell.box
        half = margin * max(x1 - x0, y1 - y0) / 2
        cx, cy = cell.centre
        left, top = max(0, round(cx - half)), max(0, round(cy - half))
        return np.ascontiguousarray(rgb[top:round(cy + half), left:round(cx + half)])

    return change


def _channel_gains(red, green, blue):
    gains = np.array([red, green, blue], np.float32)

    def change(rgb):
        return np.clip(rgb.astype(np.float32) * gains, 0, 255).astype(np.uint8)

    return change


def _gamma(gamma):
    table = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)

    def change(rgb):
        return table[rgb]

    return change


def _blurred(sigma):
    def change(rgb):
        return cv2.GaussianBlur(rgb, (0, 0), sigma)

    return change


def _jpeg(quality):
    def change(rgb):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    return change


def _stain_strength(factor):
    """Every dye's optical density times factor: a heavier (>1) or paler (<1) stain."""

    def change(rgb):
        density = -np.log(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)
        return np.clip(255.0 * np.exp(-density * factor), 0, 255).astype(np.uint8)

    return change


def _srgb_to_linear(rgb):
    unit = rgb.astype(np.float32) / 255.0
    return np.where(unit <= 0.04045, unit / 12.92, ((unit + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(linear):
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def _wide_gamut_numbers(from_linear_srgb, gamma=None):
    """The numbers a camera writing a wider colour space stores for the same colours, read as if
    they were sRGB: what a reader that ignores the file's colour profile sees (the site reads the
    profile since classifier.rendering.in_srgb; a folder of training photographs too)."""
    matrix = np.array(from_linear_srgb, np.float32)

    def change(rgb):
        linear = np.clip(_srgb_to_linear(rgb) @ matrix.T, 0.0, 1.0)
        encoded = _linear_to_srgb(linear) if gamma is None else linear ** (1 / gamma)
        return np.clip(encoded * 255.0 + 0.5, 0, 255).astype(np.uint8)

    return change


SHIFTS = (
    Shift("as photographed", lambda rgb: rgb),
    Shift("magnified 0.7x", _resized(0.7), 0.7),
    Shift("magnified 1.4x", _resized(1.4), 1.4),
    Shift("magnified 2x", _resized(2.0), 2.0),
    Shift("cropped to the cell (1.6x its box)", _cropped_around_cell(1.6)),
    Shift("cropped to the cell (1.2x its box)", _cropped_around_cell(1.2)),
    Shift("warm camera (R x1.12, B x0.85)", _channel_gains(1.12, 1.0, 0.85)),
    Shift("cold camera (R x0.88, B x1.12)", _channel_gains(0.88, 1.0, 1.12)),
    Shift("overexposed, background clipped (x1.25)", _channel_gains(1.25, 1.25, 1.25)),
    Shift("underexposed (gamma 1.6)", _gamma(1.6)),
    Shift("overexposed (gamma 0.6)", _gamma(0.6)),
    Shift("out of focus (blur 2 px)", _blurred(2.0)),
    Shift("JPEG quality 25", _jpeg(25)),
    Shift("stain 35% heavier", _stain_strength(1.35)),
    Shift("stain 35% paler", _stain_strength(0.65)),
    # Linear sRGB to linear Display P3 (both D65; P3 keeps sRGB's tone curve) and to Adobe RGB
    # (1998), encoded with its gamma of 563/256.
    Shift("Display P3 camera, its profile ignored",
          _wide_gamut_numbers([[0.8225, 0.1774, 0.0], [0.0332, 0.9669, 0.0], [0.0171, 0.0724, 0.9108]])),
    Shift("Adobe RGB camera, its profile ignored",
          _wide_gamut_numbers([[0.7152, 0.2848, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0412, 0.9588]], 563 / 256)),
)


def sampled_cells(data_dir, task, class_names, per_class, seed, metadata=None):
    """Up to per_class TEST images of each of the network's types the source holds, and on
    blood-cell-images one copy per photograph group first, so the draw spans many cells. Given a
    network's ``metadata``, from its validation split of the source instead."""
    layout = dataset.resolve_layout(data_dir)
    if metadata is None:
        originals = dataset.read_originals(layout.root)
        folder = layout.eval_dirs.get("TEST") or layout.root / "TEST"
        images = dataset.list_images(folder, task, "TEST", originals)
    else:
        images = validation_images(data_dir, metadata)
    rng = np.random.default_rng(seed)
    drawn = []
    for name in class_names:
        members = [image for image in images if image.class_name == name]
        order = rng.permutation(len(members))
        seen, first, rest = set(), [], []
        for k in order:
            image = members[k]
            (rest if image.cell_key in seen else first).append(image)
            seen.add(image.cell_key)
        drawn.extend((first + rest)[:per_class])
    return layout.root.name, drawn


def validation_images(data_dir, metadata):
    """The source's images in the network's validation split, rebuilt from its metadata."""
    rebuilt = rebuilt_split(metadata, [data_dir])
    if rebuilt is None:
        raise SystemExit("the network was trained without a validation split: use TEST")
    ((source,), _) = rebuilt
    return source.validation


@dataclass(frozen=True)
class ShiftedPhotographs:
    """What the site makes of the shifted photographs: each one's context window (None where the
    photograph cannot be read), the detector's scale reading (NaN there) and whether its quality
    warns, for the readable ones."""

    windows: list
    scales: np.ndarray
    warned: np.ndarray


def shifted_photographs(images, shift):
    windows, scales, warned = [], [], []
    for image in images:
        rgb = dataset.decode_image(image.path)
        if rgb is None:
            windows.append(None)
            scales.append(np.nan)
            continue
        shifted = shift.change(rgb)
        result = detection.detect_leukocytes(shifted)
        windows.append(dataset.dataset_context_window(shifted, result=result)[0])
        scales.append(result.scale)
        warned.append(bool(assess_quality(shifted, scale=result.scale if result.cells else None).warnings))
    return ShiftedPhotographs(windows, np.array(scales, np.float64), np.array(warned, bool))


def shift_figures(classifier, images, shift, shifted, baseline_scales, review_threshold):
    """The table's figures for one shift; ``baseline_scales``: the scale readings of the
    photographs as they are, which a reading after the shift is compared with."""
    names = list(classifier.class_names)
    y_all = np.array([names.index(image.class_name) for image in images])
    windows, scales, warned = shifted.windows, shifted.scales, shifted.warned
    ok = np.array([window is not None for window in windows])
    readable = [k for k, window in enumerate(windows) if window is not None]

    def window_at(row, factor):
        # A second look's window: the photograph shifted and detected again, only for the calls
        # the network is unsure of (holding every shifted photograph would take a gigabyte).
        if factor == 1.0:
            return windows[readable[row]]
        photograph = shift.change(dataset.decode_image(images[readable[row]].path))
        result = detection.detect_leukocytes(photograph)
        return dataset.dataset_context_window(photograph, result=result, factor=factor)[0]

    looks = second_look.classify_cells(classifier, window_at, len(readable))
    y = y_all[ok]
    held = [name for k, name in enumerate(names) if (y == k).any()]
    probabilities, y_held, _ = restricted(looks.probabilities, y, names, held)
    predicted = probabilities.argmax(1)
    wrong = predicted != y_held
    # As the site flags: a doubtful call, an unfamiliar cell, a call the second look changed, or
    # any cell of a photograph whose quality warns.
    flagged = looks.needs_review(review_threshold) | warned
    four_type_accuracy = float("nan")
    if set(FOUR_CLASSES) <= set(names):
        four, four_y, _ = restricted(looks.probabilities, y, names, FOUR_CLASSES)
        four_type_accuracy = float((four.argmax(1) == four_y).mean()) if len(four_y) else float("nan")
    figures = {
        "cells": int(ok.sum()),
        "accuracy": float(1 - wrong.mean()),
        "four_type_accuracy": four_type_accuracy,
        "warned": float(warned.mean()),
        "flagged": float(flagged.mean()),
        "errors_caught": float(flagged[wrong].mean()) if wrong.any() else float("nan"),
        "scale_ratio": float("nan"),
    }
    if shift is not SHIFTS[0]:
        ratio = scales / (baseline_scales * shift.magnification)
        figures["scale_ratio"] = float(np.nanmedian(ratio))
        figures["scale_off_by_20_percent"] = float(np.nanmean(np.abs(np.log(ratio)) > np.log(1.2)))
    return figures


def _percent(value):
    return "   -  " if np.isnan(value) else f"{100 * value:5.1f}%"


def print_table(source, rows):
    print(f"\n{source}")
    print(f"{'photographed as':40} {'cells':>5} {'types':>7} {'4 types':>7} {'warned':>7} "
          f"{'flagged':>7} {'caught':>7} {'scale':>6} {'>20% off':>8}")
    for name, figures in rows:
        scale = figures["scale_ratio"]
        off = figures.get("scale_off_by_20_percent", float("nan"))
        print(f"{name:40} {figures['cells']:5d} {_percent(figures['accuracy']):>7} "
              f"{_percent(figures['four_type_accuracy']):>7} {_percent(figures['warned']):>7} "
              f"{_percent(figures['flagged']):>7} "
              f"{_percent(figures['errors_caught']):>7} "
              f"{'  -  ' if np.isnan(scale) else f'{scale:5.2f}':>6} {_percent(off):>8}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--data", action="append", metavar="DIR",
                        help="a source with a TEST folder (repeatable; default: both shared sources)")
    parser.add_argument("--per-class", type=int, default=40, help="cells per type (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("TEST", "validation"), default="TEST",
                        help="draw the cells from each source's TEST (default) or from the network's "
                        "own validation split, to choose between recipes without reading TEST")
    parser.add_argument("--review-threshold", type=float, default=None,
                        help="the review flag's confidence threshold (default: the one the network "
                        "fitted on its validation cells, else 0.8)")
    args = parser.parse_args(argv)
    quiet_tensorflow_startup(os.environ)
    sources = args.data or [str(path) for path in DEFAULT_SOURCES if path.is_dir()]
    if not sources:
        parser.error("no data folder: pass --data DIR (a source with a TEST folder)")
    classifier = CellClassifier.from_directory(args.model_dir)
    if args.review_threshold is None:
        args.review_threshold = ood.confidence_threshold(classifier.metadata.get("metrics"))
    print(f"{Path(args.model_dir).name}: {', '.join(classifier.class_names)}; review threshold "
          f"{args.review_threshold}, up to {args.per_class} {args.split} cells per type, seed {args.seed}")
    metadata = classifier.metadata if args.split == "validation" else None
    for data_dir in sources:
        name, images = sampled_cells(
            data_dir, classifier.task, classifier.class_names, args.per_class, args.seed, metadata)
        as_they_are = shifted_photographs(images, SHIFTS[0])  # the first shift changes nothing
        rows = []
        for shift in SHIFTS:
            # One shift's windows at a time: all of them at once would hold a gigabyte.
            shifted = as_they_are if shift is SHIFTS[0] else shifted_photographs(images, shift)
            figures = shift_figures(classifier, images, shift, shifted, as_they_are.scales,
                                    args.review_threshold)
            rows.append((shift.name, figures))
        print_table(name, rows)


if __name__ == "__main__":
    main()
