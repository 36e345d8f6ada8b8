"""One smear photograph in, everything the site stores about it out: what the worker calls.

The photograph's quality, then every leukocyte found, classified in one network call (and a second
look at other magnifications where the network is unsure: classifier.second_look) and finished
with the pictures the site shows of it, encoded as it stores them, and with the review decision:
a call under the site's confidence threshold, or a cell unlike those the network was trained on
(classifier.ood), goes to a person, and so does every cell of a photograph whose quality measures
warn (out of focus, badly exposed, colour cast): there no call can be taken on trust. The call,
its Grad-CAM and the picture drawn under the heat map all use one preparation of the view the
call came from.

Boxes a person drew around cells the detector missed (``given_boxes``) are finished the same way,
in the same network call, at the scale the detector read from the photograph's red cells.

A photograph taken of one cell (an analyser's cell picture, a lab's own crop: ``one_cell``) gives
one cell, the one in its middle: whatever else the detector outlined beside it (a neighbour's
edge, a clump of red cells, spilled granules) is not that cell, and where the detector outlined
nothing the photograph's middle is classified all the same and left to a person. So is the cell
taken where none covers the middle and the detector outlined others: the one nearest the middle
may be a neighbour of the cell the photograph was taken of. A box a person drew there is that cell
instead.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from classifier import second_look
from classifier.boxes import holds_centre
from classifier.detection import (
    DetectedCell,
    cell_window,
    centre_first,
    detect_leukocytes,
    middle_cell,
    window_fill,
)
from classifier.field_of_view import DarkSurround
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
    # How unfamiliar the cell is to the network at the photograph's scale (classifier.ood: above 1,
    # unlike its training cells); None for a network trained without the score.
    ood_score: float | None
    # Confidence under the site's threshold (at the photograph's scale or as served), ood_score
    # above 1, a call the second look changed (classifier.second_look), or a photograph whose
    # quality warns.
    needs_review: bool
    binary_call: str  # MONONUCLEAR / POLYNUCLEAR
    crop_jpeg: bytes  # the cell in the photograph, with a margin
    window_png: bytes  # the 240x320 context window the network's call came from, lossless
    heatmap_jpeg: bytes  # Grad-CAM of the call over the network's input
    # The view the call came from, as a factor of the photograph's scale: 1.0, or a second look's.
    view_factor: float = 1.0
    # Where a second look was taken, the first look's call and confidence ("" and None where not).
    first_look_type: str = ""
    first_look_confidence: float | None = None
    # False for a photograph of one cell whose middle was classified because the detector outlined
    # no cell there (such a cell always needs review).
    outlined: bool = True
    # The box reaches the black around an eyepiece's round field (classifier.field_of_view): an
    # edge that cuts the cell, as the photograph's own does (classifier.boxes.cut_by_edge).
    touches_dark_surround: bool = False


@dataclass(frozen=True)
class SmearAnalysis:
    quality: QualityReport
    cells: list[FinishedCell]  # the photograph's centre outwards (centre_first)
    # The boxes given to analyse_smear (drawn by a person), finished in the order given.
    given_cells: list[FinishedCell] = field(default_factory=list)


def analyse_smear(rgb, classifier, *, review_threshold, given_boxes=(), one_cell=False) -> SmearAnalysis:
    """Assess an RGB uint8 photograph, detect its leukocytes, classify them all in one network call
    (classifier: a classifier.inference.CellClassifier) and finish each one, flagging for review
    the calls under ``review_threshold`` (the site's confidence threshold), unfamiliar cells and
    every cell of a photograph whose quality warns. ``given_boxes`` (x0, y0, x1, y1 in the
    photograph's pixels) are cells a person drew: finished alike, returned apart. ``one_cell``:
    the photograph was taken of one cell, and gives the one in its middle (module docstring)."""
    rgb = np.asarray(rgb)
    detection = detect_leukocytes(rgb)
    surround = DarkSurround.find(rgb)
    quality = assess_quality(rgb, scale=detection.scale if detection.cells or given_boxes else None,
                             surround=surround)
    given = [DetectedCell(box=tuple(int(v) for v in box), score=1.0) for box in given_boxes]
    found_cells = centre_first(detection.cells, rgb.shape)
    unoutlined = one_cell and not found_cells and not given
    height, width = rgb.shape[:2]
    off_middle = (one_cell and len(found_cells) > 1 and not given
                  and not holds_centre(found_cells[0].box, width, height))
    if one_cell:
        found_cells = [] if given else found_cells[:1] or [middle_cell(rgb.shape, detection.scale)]
    finished = _finish_cells(rgb, classifier, [*found_cells, *given], detection.scale,
                             review_threshold=review_threshold, doubtful_photograph=bool(quality.warnings),
                             surround=surround)
    found = len(found_cells)
    cells = finished[:found]
    if unoutlined:
        cells = [replace(cells[0], needs_review=True, outlined=False)]
    elif off_middle:
        cells = [replace(cells[0], needs_review=True)]
    return SmearAnalysis(quality=quality, cells=cells, given_cells=finished[found:])


def finish_box(rgb, box, classifier, *, review_threshold) -> FinishedCell:
    """One cell a person drew (box: x0, y0, x1, y1 in the photograph's pixels) finished as
    analyse_smear finishes the detected ones: the window is cut at the scale the detector reads
    from the photograph, and the photograph's quality warnings flag it as they flag those."""
    rgb = np.asarray(rgb)
    scale = detect_leukocytes(rgb).scale
    surround = DarkSurround.find(rgb)
    quality = assess_quality(rgb, scale=scale, surround=surround)
    cell = DetectedCell(box=tuple(int(v) for v in box), score=1.0)
    (finished,) = _finish_cells(rgb, classifier, [cell], scale, review_threshold=review_threshold,
                                doubtful_photograph=bool(quality.warnings), surround=surround)
    return finished


def _finish_cells(rgb, classifier, found_cells, scale, *, review_threshold, doubtful_photograph,
                  surround=None):
    """Classify the cells in one network call, with a second look at other magnifications where
    the network is unsure (classifier.second_look), and finish each one (FinishedCell, in order).
    ``surround``: the photograph's DarkSurround, where it has one."""
    if not found_cells:
        return []
    fill = window_fill(rgb)  # the photograph's background: read once, not once a window

    def window_at(row, factor):
        return cell_window(rgb, found_cells[row], scale * factor, fill=fill)

    looks = second_look.classify_cells(classifier, window_at, len(found_cells))
    heatmaps = classifier.heatmaps(looks.inputs, looks.probabilities.argmax(axis=1))
    names = list(classifier.class_names)
    flags = looks.needs_review(review_threshold) | doubtful_photograph
    # The first look's score: how unfamiliar the cell is at the photograph's own scale.
    scores = looks.first.ood_scores
    cells = []
    for row, (found, window) in enumerate(zip(found_cells, looks.windows, strict=True)):
        probabilities = {name: float(p) for name, p in zip(names, looks.probabilities[row], strict=True)}
        best = int(np.argmax(looks.probabilities[row]))
        binary = binary_probabilities(probabilities)
        box = tuple(int(value) for value in found.box)
        crop, window_png, heatmap = cell_pictures(rgb, box, window, looks.inputs[row], heatmaps[row])
        cells.append(FinishedCell(
            box=box,
            detection_score=float(found.score),
            probabilities=probabilities,
            predicted_type=names[best],
            confidence=float(looks.probabilities[row][best]),
            ood_score=None if scores is None else float(scores[row]),
            needs_review=bool(flags[row]),
            binary_call=max(binary, key=binary.get),
            crop_jpeg=crop,
            window_png=window_png,
            heatmap_jpeg=heatmap,
            touches_dark_surround=surround is not None and surround.touches(box),
            **_first_look(looks, row, names),
        ))
    return cells


def _first_look(looks, row, names):
    """The second look's record of cell ``row`` (FinishedCell's last three fields)."""
    if not looks.looked_again[row]:
        return {}
    first = looks.first.probabilities[row]
    return {
        "view_factor": float(looks.factors[row]),
        "first_look_type": names[int(np.argmax(first))],
        "first_look_confidence": float(first.max()),
    }
