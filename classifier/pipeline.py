"""One smear photograph in, everything the site stores about it out: what the worker calls.

The photograph's quality, then every leukocyte found, classified in one network call and finished
with the pictures the site shows of it, encoded as it stores them, and with the review decision:
a call under the site's confidence threshold, or a cell unlike those the network was trained on
(classifier.ood), goes to a person. Each cell's context window is prepared for the network once;
the call, its Grad-CAM and the picture drawn under the heat map all use that one preparation.
"""

from dataclasses import dataclass

import numpy as np

from classifier.detection import cell_window, detect_leukocytes
from classifier.labels import binary_probabilities
from classifier.quality import QualityReport, assess_quality
from classifier.rendering import cell_pictures


@dataclass(frozen=True)
class FinishedCell:
    """One leukocyte as the site stores it."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the photograph's pixels
    detection_score: float
    probabilities: dict[str, float]  # class name -> calibrated probability, in class_names order
    predicted_type: str
    confidence: float  # calibrated probability of predicted_type
    # How unfamiliar the cell is to the network (classifier.ood: above 1, unlike its training
    # cells); None for a network trained without the score.
    ood_score: float | None
    needs_review: bool  # confidence under the site's threshold, or ood_score above 1
    binary_call: str  # MONONUCLEAR / POLYNUCLEAR
    crop_jpeg: bytes  # the cell in the photograph, with a margin
    window_png: bytes  # the 240x320 context window the network saw, lossless
    heatmap_jpeg: bytes  # Grad-CAM of the call over the network's input


@dataclass(frozen=True)
class SmearAnalysis:
    quality: QualityReport
    cells: list[FinishedCell]  # in detection order (best score first)


def analyse_smear(rgb, classifier, *, review_threshold) -> SmearAnalysis:
    """Assess an RGB uint8 photograph, detect its leukocytes, classify them all in one network call
    (classifier: a classifier.inference.CellClassifier) and finish each one, flagging for review
    the calls under ``review_threshold`` (the site's confidence threshold) and unfamiliar cells."""
    rgb = np.asarray(rgb)
    quality = assess_quality(rgb)
    detection = detect_leukocytes(rgb)
    windows = [cell_window(rgb, cell, detection.scale) for cell in detection.cells]
    if not windows:
        return SmearAnalysis(quality=quality, cells=[])
    explained = classifier.explained_calls(windows)
    names = list(classifier.class_names)
    flags = explained.needs_review(review_threshold)
    scores = explained.ood_scores
    cells = []
    for row, (found, window) in enumerate(zip(detection.cells, windows, strict=True)):
        probabilities = {name: float(p) for name, p in zip(names, explained.probabilities[row], strict=True)}
        best = int(np.argmax(explained.probabilities[row]))
        binary = binary_probabilities(probabilities)
        box = tuple(int(value) for value in found.box)
        crop, window_png, heatmap = cell_pictures(
            rgb, box, window, explained.network_inputs[row], explained.heatmaps[row]
        )
        cells.append(FinishedCell(
            box=box,
            detection_score=float(found.score),
            probabilities=probabilities,
            predicted_type=names[best],
            confidence=float(explained.probabilities[row][best]),
            ood_score=None if scores is None else float(scores[row]),
            needs_review=bool(flags[row]),
            binary_call=max(binary, key=binary.get),
            crop_jpeg=crop,
            window_png=window_png,
            heatmap_jpeg=heatmap,
        ))
    return SmearAnalysis(quality=quality, cells=cells)
