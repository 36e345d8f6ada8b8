"""Detector benchmark against the BCCD leukocyte boxes.

    python bench/detect.py [--data DIR] [--model MODEL_DIR]

DIR is the shared datasets folder or its bccd-smears sub-folder (default: ../shared/datasets from
the project root). Part 1 prints recall and precision at IoU >= 0.5, the mean IoU of matched
boxes, images per second on ONE core (OpenCV is pinned to one thread, as a Celery worker process
gets), every miss and false positive, and the matched cells the site's edge rule (a cell the
photograph's edge cuts is left out of the formula) decides otherwise on the detected box than on
the annotated one.

Part 1b darkens the same smears outside a centred circle, as a photograph through the eyepiece
shows them, and prints for three circle widths the detector's recall and precision on the
leukocytes the circle shows, how often the edge rule's call on the black around it
(classifier.field_of_view) agrees with the annotated box, and how many photographs warn.

Part 2 runs the whole smear pipeline (detector + classifier) on the smears whose photograph no
training image was made from, and prints the share whose cell gets its labelled type, 4-class and
binary. It needs a saved model folder (--model, default: the first bundled model) and the
blood-cell-images originals.csv next to bccd-smears.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Run as a script (`python bench/detect.py`), Python puts bench/ on the path, not the project.
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from classifier.boxes import box_iou, cut_by_edge, match_boxes, touches_edge  # noqa: E402
from classifier.detection import detect_leukocytes  # noqa: E402
from classifier.field_of_view import DarkSurround  # noqa: E402
from classifier.labels import binary_group  # noqa: E402
from classifier.model_folder import BUNDLED_MODELS_DIR, bundled_model_folders  # noqa: E402
from classifier.quality import assess_quality  # noqa: E402
from classifier.runtimes import quiet_tensorflow_startup  # noqa: E402

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


def match(truth, found) -> tuple[list[tuple[int, int, float]], list[int], list[int]]:
    """Greedy one-to-one matching by IoU: (truth, found, iou) pairs, unmatched truth, found."""
    matched = match_boxes(truth, found, IOU_MATCH)
    used_t, used_f = {i for i, _, _ in matched}, {j for _, j, _ in matched}
    misses = [i for i in range(len(truth)) if i not in used_t]
    extras = [j for j in range(len(found)) if j not in used_f]
    return matched, misses, extras


def edge_disagreements(truth, found, matched, width, height):
    """([(truth, found) index pairs the edge rule leaves out on the detected box but not on the
    annotated one], [those it counts on the detected box though the annotated one is cut])."""
    left_out, kept = [], []
    for i, j, _ in matched:
        annotated_cut, found_cut = (cut_by_edge(box, width, height) for box in (truth[i], found[j]))
        if annotated_cut != found_cut:
            (left_out if found_cut else kept).append((i, j))
    return left_out, kept


@dataclass
class DetectionFigures:
    images: int = 0
    truths: int = 0
    found: int = 0
    ious: list[float] = field(default_factory=list)
    seconds: float = 0.0
    misses: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)
    # Matched cells the site's edge rule (classifier.boxes.cut_by_edge: cut by the photograph's
    # edge, left out of the formula) decides otherwise on the detected box than on the annotated one.
    edge_left_out: list[str] = field(default_factory=list)  # annotated clear of the edge
    edge_kept: list[str] = field(default_factory=list)  # annotated at the edge


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
        left_out, kept = edge_disagreements(truth, found, matched, rgb.shape[1], rgb.shape[0])
        for pairs, lines in ((left_out, figures.edge_left_out), (kept, figures.edge_kept)):
            lines.extend(f"{image_path.stem} WBC {truth[i]} detected {found[j]}" for i, j in pairs)
        for i in misses:
            best = max((box_iou(truth[i], f) for f in found), default=0.0)
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
    print(f"  the edge rule on the {len(figures.ious)} matched cells, detected box against annotated: "
          f"{len(figures.edge_left_out)} left out as cut by the edge though annotated clear of it, "
          f"{len(figures.edge_kept)} counted though annotated at it")
    for line in figures.edge_left_out:
        print(f"    left out: {line}")
    for line in figures.edge_kept:
        print(f"    counted: {line}")


# --- Part 1b: the same smears photographed through the eyepiece --------------------------------

# Circles as wide as these shares of the photograph's height: wider than the frame (cut at top and
# bottom, as an eyepiece adapter frames it) and inside it (a phone held to the eyepiece).
EYEPIECE_WIDTHS = (1.2, 1.0, 0.8)


def through_an_eyepiece(rgb, width_share, seed=0):
    """The photograph with black outside a centred circle: soft-edged, and as noisy as a phone's
    black (0-14)."""
    height, width = rgb.shape[:2]
    field = np.zeros((height, width), np.uint8)
    cv2.circle(field, (width // 2, height // 2), round(width_share * height / 2), 255, -1)
    field = cv2.GaussianBlur(field, (0, 0), 2)[..., None] / 255.0
    black = np.random.default_rng(seed).integers(0, 15, rgb.shape)
    return (rgb * field + black * (1 - field)).astype(np.uint8), field[..., 0] > 0.5


def visible_part(box, shown):
    """The box around the pixels of ``box`` the circle shows: the whole box where it shows all."""
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(shown[max(0, y0):y1, max(0, x0):x1])
    return (max(0, x0) + int(xs.min()), max(0, y0) + int(ys.min()),
            max(0, x0) + int(xs.max()) + 1, max(0, y0) + int(ys.max()) + 1)


def reaches_out(box, shown):
    """Whether the cell annotated by ``box``, taken as the ellipse the box holds, reaches past what
    the circle shows (the box's corners hold no cell)."""
    x0, y0, x1, y1 = box
    cell = np.zeros(shown.shape, np.uint8)
    cv2.ellipse(cell, (((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0, y1 - y0), 0), 1, -1)
    return bool((cell.astype(bool) & ~shown).any())


@dataclass
class EyepieceFigures:
    truths: int = 0  # annotated leukocytes whose centre the circle shows
    matched: int = 0
    found: int = 0
    # Matched cells the photograph's own edge does not cut: the edge rule, on the detected box,
    # against whether the annotated cell reaches out of the circle (by a pixel or more).
    cut_agreed: int = 0
    cut_annotated: int = 0
    whole_agreed: int = 0
    whole_annotated: int = 0
    warned: int = 0  # photographs whose quality warns
    images: int = 0


def benchmark_eyepiece(bccd: Path, width_share: float) -> EyepieceFigures:
    figures = EyepieceFigures()
    for seed, image_path in enumerate(sorted((bccd / "JPEGImages").glob("*.jpg"))):
        rgb, shown = through_an_eyepiece(cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB),
                                         width_share, seed)
        height, width = shown.shape
        annotated = [box for box in voc_boxes(bccd / "Annotations" / f"{image_path.stem}.xml")
                     if shown[min(height - 1, (box[1] + box[3]) // 2),
                              min(width - 1, (box[0] + box[2]) // 2)]]
        # Matched on the part the circle shows, as one would annotate this photograph.
        truth = [visible_part(box, shown) for box in annotated]
        result = detect_leukocytes(rgb)
        surround = DarkSurround.find(rgb)
        found = [cell.box for cell in result.cells]
        matched, _, _ = match(truth, found)
        figures.images += 1
        figures.truths += len(truth)
        figures.found += len(found)
        figures.matched += len(matched)
        figures.warned += bool(assess_quality(rgb, result.scale, surround=surround).warnings)
        for i, j, _ in matched:
            if cut_by_edge(found[j], width, height):
                continue
            annotated_cut = reaches_out(annotated[i], shown)
            said_cut = cut_by_edge(found[j], width, height,
                                   touches_surround=surround is not None and surround.touches(found[j]))
            if annotated_cut:
                figures.cut_annotated += 1
                figures.cut_agreed += said_cut
            else:
                figures.whole_annotated += 1
                figures.whole_agreed += not said_cut
    return figures


def print_eyepiece(figures: EyepieceFigures, width_share: float) -> None:
    print(f"Through an eyepiece (black outside a circle {width_share:g}x the photograph's height), "
          f"{figures.truths} annotated leukocytes the circle shows:")
    print(f"  recall {figures.matched / max(figures.truths, 1):.3f}, precision "
          f"{figures.matched / max(figures.found, 1):.3f} ({figures.found} detections); quality "
          f"warns on {figures.warned} of {figures.images} photographs")
    agreed = figures.cut_agreed + figures.whole_agreed
    print(f"  the edge rule (classifier.field_of_view), on the matched cells the photograph's own edge "
          f"does not cut: {agreed / max(figures.cut_annotated + figures.whole_annotated, 1):.3f} agree "
          f"with the annotated cell ({figures.cut_agreed}/{figures.cut_annotated} reaching out of the "
          f"circle left out, {figures.whole_agreed}/{figures.whole_annotated} inside it counted)")


# --- Part 2: the whole smear pipeline, on smears the classifier never saw -----------------------


def unseen_smears(bccd: Path) -> list[str]:
    """BCCD photographs no TRAIN image was made from: TEST originals and unreferenced ones."""
    originals_csv = bccd.parent / "blood-cell-images" / "originals.csv"
    if not originals_csv.exists():
        raise FileNotFoundError(f"{originals_csv} is needed to tell unseen smears apart")
    split_of = {}
    with originals_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            split_of.setdefault(row["original"], set()).add(row["split"])
    stems = sorted(path.stem for path in (bccd / "JPEGImages").glob("*.jpg"))
    return [stem for stem in stems if "TRAIN" not in split_of.get(stem, set())]


def labelled_types(bccd: Path) -> dict[str, list[str]]:
    """Each photograph's labelled leukocyte types; photographs without a label are left out."""
    labels = {}
    with (bccd / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            types = [name.strip().upper() for name in row["category"].split(",") if name.strip()]
            if types:
                labels[Path(row["image"]).stem] = types
    return labels


def counted_calls(cells, width: int, height: int, how_many: int) -> list[str]:
    """The types of the first ``how_many`` cells (best detection first) that the site's formula
    counts as leukocytes: a cell the photograph's edge cuts is left out of it, and so is a call that
    is no leukocyte (platelet, erythroblast); sorted, to compare with a smear's labels."""
    # binary_group names no group for a platelet or an erythroblast; a binary network's calls
    # are their own group.
    counted = [cell.predicted_type for cell in cells
               if binary_group(cell.predicted_type) and not cut_by_edge(cell.box, width, height)]
    return sorted(counted[:how_many])


@dataclass
class PipelineScore:
    """Smears whose calls equal their labels, over every type and over the binary grouping."""

    smears: int = 0
    right: int = 0
    right_binary: int = 0
    wrong: list[str] = field(default_factory=list)

    def add(self, stem: str, expected: list[str], called: list[str]) -> None:
        self.smears += 1
        self.right += called == expected
        self.right_binary += sorted(map(binary_group, called)) == sorted(map(binary_group, expected))
        if called != expected:
            self.wrong.append(f"{stem}: labelled {', '.join(expected)}, got {', '.join(called) or '-'}")

    def shares(self) -> str:
        total = max(self.smears, 1)
        return (f"{self.right / total:.3f} ({self.right}/{self.smears}), binary "
                f"{self.right_binary / total:.3f} ({self.right_binary}/{self.smears})")


def benchmark_pipeline(bccd: Path, model_dir: Path) -> None:
    """Share of unseen smears whose leukocyte(s) get the labelled type, 4-class and binary.

    A smear counts as right when the types of its best-scoring detections, as many as it has
    labels, equal its labels; a missed cell makes it wrong. Binary calls use the same rule. A
    second figure reads the smears as the site's formula does: on those whose every annotated
    leukocyte lies whole inside the photograph, the first detections the formula counts.
    """
    from classifier.inference import CellClassifier
    from classifier.pipeline import analyse_smear

    classifier = CellClassifier.from_directory(model_dir)
    labels = labelled_types(bccd)
    smears = [stem for stem in unseen_smears(bccd) if stem in labels]
    every, known, as_counted = PipelineScore(), PipelineScore(), PipelineScore()
    start = time.perf_counter()
    for stem in smears:
        bgr = cv2.imread(str(bccd / "JPEGImages" / f"{stem}.jpg"))
        height, width = bgr.shape[:2]
        # The review flag is not scored here; 0.8 is the site's default threshold.
        analysis = analyse_smear(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), classifier, review_threshold=0.8)
        expected = sorted(labels[stem])
        called = sorted(cell.predicted_type for cell in analysis.cells[: len(expected)])
        every.add(stem, expected, called)
        # A 4-class network cannot name a basophil: those smears count for binary only, and the
        # 4-class share is also given over the smears whose every labelled type the network knows.
        if set(expected) <= set(classifier.class_names):
            known.add(stem, expected, called)
        annotated = voc_boxes(bccd / "Annotations" / f"{stem}.xml")
        if annotated and not any(touches_edge(box, width, height) for box in annotated):
            as_counted.add(stem, expected, counted_calls(analysis.cells, width, height, len(expected)))
    seconds = time.perf_counter() - start
    count = max(len(smears), 1)
    print(f"Smear pipeline with model {model_dir} on {len(smears)} smears no training image")
    print("came from (TEST originals + photographs originals.csv never references)")
    print(f"  cell type right, 4-class: {every.right / count:.3f} ({every.right}/{len(smears)})")
    print(
        f"  cell type right, 4-class, smears of known types only: "
        f"{known.right / max(known.smears, 1):.3f} ({known.right}/{known.smears})"
    )
    print(f"  cell type right, binary:  {every.right_binary / count:.3f} "
          f"({every.right_binary}/{len(smears)})")
    print(f"  {seconds / count * 1000:.0f} ms per smear (quality, detection, network, Grad-CAM, pictures)")
    print(f"  wrong 4-class ({len(every.wrong)}):")
    for line in every.wrong:
        print(f"    {line}")
    print(f"As the site's formula counts (cells the photograph's edge cuts and calls that are no "
          f"leukocyte left out), on the {as_counted.smears} smears whose every annotated leukocyte "
          f"lies whole in the photograph:")
    print(f"  cell type right: {as_counted.shares()}")
    print(f"  wrong ({len(as_counted.wrong)}):")
    for line in as_counted.wrong:
        print(f"    {line}")


def main(argv: list[str] | None = None) -> None:
    quiet_tensorflow_startup(os.environ)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="datasets or bccd folder")
    parser.add_argument("--model", type=Path, default=None, help="saved model folder (part 2)")
    parser.add_argument("--skip-pipeline", action="store_true", help="run part 1 only")
    args = parser.parse_args(argv)
    # One core, as a Celery worker process gets: the images/s figure is per core.
    cv2.setNumThreads(1)
    bccd = bccd_folder(args.data)
    print_detection(benchmark_detector(bccd))
    for width_share in EYEPIECE_WIDTHS:
        print()
        print_eyepiece(benchmark_eyepiece(bccd, width_share), width_share)
    if args.skip_pipeline:
        return
    # The bundled model a fresh install serves comes first.
    model_dir = args.model or next(iter(bundled_model_folders()), None)
    print()
    if model_dir is None:
        print(f"Smear pipeline skipped: no --model given and no bundled model in {BUNDLED_MODELS_DIR}")
        return
    benchmark_pipeline(bccd, model_dir)


if __name__ == "__main__":
    main()
