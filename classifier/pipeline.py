"""One smear photograph in, every leukocyte found and classified out: what the worker calls."""

from dataclasses import dataclass, field

import numpy as np

from classifier.labels import binary_probabilities


@dataclass
class ClassifiedCell:
    cell: object  # classifier.detection.DetectedCell
    window: np.ndarray  # uint8 240x320x3 context window at reference scale
    probabilities: dict  # class name -> calibrated probability
    predicted_type: str
    binary_call: str  # MONONUCLEAR / POLYNUCLEAR
    confidence: float  # calibrated probability of predicted_type
    binary_probabilities: dict = field(default_factory=dict)


@dataclass
class SmearAnalysis:
    detection: object  # classifier.detection.DetectionResult
    cells: list  # [ClassifiedCell], in detection order (best score first)

    @property
    def counts(self):
        counts = {}
        for cell in self.cells:
            counts[cell.predicted_type] = counts.get(cell.predicted_type, 0) + 1
        return counts


def classify_windows(windows, classifier):
    """Probabilities dicts, predicted types, binary calls and confidences for windows, batched."""
    if len(windows) == 0:
        return []
    probabilities = classifier.predict(windows)
    names = list(classifier.class_names)
    out = []
    for row in probabilities:
        as_dict = {name: float(p) for name, p in zip(names, row, strict=True)}
        best = int(np.argmax(row))
        binary = binary_probabilities(as_dict)
        out.append(
            {
                "probabilities": as_dict,
                "predicted_type": names[best],
                "confidence": float(row[best]),
                "binary_probabilities": binary,
                "binary_call": max(binary, key=binary.get),
            }
        )
    return out


def analyse_smear(rgb, classifier) -> SmearAnalysis:
    """Detect the leukocytes of an RGB uint8 photograph and classify them all in one model call."""
    from classifier.detection import cell_window, detect_leukocytes

    rgb = np.asarray(rgb)
    detection = detect_leukocytes(rgb)
    windows = [cell_window(rgb, cell, detection.scale) for cell in detection.cells]
    calls = classify_windows(windows, classifier)
    cells = [
        ClassifiedCell(cell=cell, window=window, **call)
        for cell, window, call in zip(detection.cells, windows, calls, strict=True)
    ]
    return SmearAnalysis(detection=detection, cells=cells)
