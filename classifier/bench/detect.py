"""Detector benchmark against the BCCD leukocyte boxes.

    python -m classifier.bench.detect [--data DIR]

DIR is the shared datasets folder or its bccd-smears sub-folder (default: ../shared/datasets from
the project root). Prints recall and precision at IoU >= 0.5, the mean IoU of matched boxes,
images per second on ONE core (OpenCV is pinned to one thread, as a Celery worker process gets),
and every miss and false positive.
"""

from __future__ import annotations

import argparse
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from classifier.detection import detect_leukocytes

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "datasets"
IOU_MATCH = 0.5


def bccd_folder(data: Path) -> Path:
    """The bccd-smears folder, given it or the datasets folder above it."""
    for candidate in (data, data / "bccd-smears"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "Annotations").is_dir():
            return candidate
    raise SystemExit(f"No bccd-smears data (JPEGImages/ and Annotations/) under {data}")


def voc_boxes(xml_path: Path, name: str = "WBC") -> list[tuple[int, int, int, int]]:
    """Boxes of one object class, as x0, y0, x1, y1 with x1/y1 exclusive."""
    boxes = []
    for obj in ET.parse(xml_path).findall("object"):
        if obj.findtext("name", "").strip() != name:
            continue
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (round(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x0, y0, x1, y1))
    return boxes


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(truth, found) -> tuple[list[tuple[int, int, float]], list[int], list[int]]:
    """Greedy one-to-one matching by IoU: (truth, found, iou) pairs, unmatched truth, found."""
    pairs = sorted(
        ((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True
    )
    matched, used_t, used_f = [], set(), set()
    for overlap, i, j in pairs:
        if overlap < IOU_MATCH or i in used_t or j in used_f:
            continue
        matched.append((i, j, overlap))
        used_t.add(i)
        used_f.add(j)
    misses = [i for i in range(len(truth)) if i not in used_t]
    extras = [j for j in range(len(found)) if j not in used_f]
    return matched, misses, extras


@dataclass
class DetectionFigures:
    images: int = 0
    truths: int = 0
    found: int = 0
    ious: list[float] = field(default_factory=list)
    seconds: float = 0.0
    misses: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)


def benchmark_detector(bccd: Path) -> DetectionFigures:
    figures = DetectionFigures()
    for image_path in sorted((bccd / "JPEGImages").glob("*.jpg")):
        truth = voc_boxes(bccd / "Annotations" / f"{image_path.stem}.xml")
        rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        start = time.perf_counter()
        result = detect_leukocytes(rgb)
        figures.seconds += time.perf_counter() - start
        found = [cell.box for cell in result.cells]
        matched, misses, extras = match(truth, found)
        figures.images += 1
        figures.truths += len(truth)
        figures.found += len(found)
        figures.ious.extend(overlap for _, _, overlap in matched)
        for i in misses:
            best = max((iou(truth[i], f) for f in found), default=0.0)
            figures.misses.append(f"{image_path.stem} WBC {truth[i]} best IoU {best:.2f}")
        for j in extras:
            cell = result.cells[j]
            figures.false_positives.append(f"{image_path.stem} {cell.box} score {cell.score:.2f}")
    return figures


def print_detection(figures: DetectionFigures) -> None:
    recall = len(figures.ious) / max(figures.truths, 1)
    precision = len(figures.ious) / max(figures.found, 1)
    mean_iou = float(np.mean(figures.ious)) if figures.ious else 0.0
    print(f"Detector on {figures.images} BCCD smears, {figures.truths} annotated leukocytes")
    print(f"  recall    @IoU>={IOU_MATCH}: {recall:.3f}")
    print(f"  precision @IoU>={IOU_MATCH}: {precision:.3f}  ({figures.found} detections)")
    print(f"  mean IoU of matched boxes: {mean_iou:.3f}")
    print(f"  speed: {figures.images / figures.seconds:.1f} images/s on one core (cv2 threads = 1)")
    print(f"  misses ({len(figures.misses)}):")
    for line in figures.misses:
        print(f"    {line}")
    print(f"  false positives ({len(figures.false_positives)}):")
    for line in figures.false_positives:
        print(f"    {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="datasets or bccd folder")
    args = parser.parse_args(argv)
    # One core, as a Celery worker process gets: the images/s figure is per core.
    cv2.setNumThreads(1)
    print_detection(benchmark_detector(bccd_folder(args.data)))


if __name__ == "__main__":
    main()
