"""Comparing boxes (x0, y0, x1, y1, x1 and y1 exclusive): one cell found twice, or found and annotated."""

# Boxes of one cell found on two runs of the detector overlap far more than this; two cells never do.
SAME_CELL_IOU = 0.5
# A box this close to the photograph's edge (px) belongs to a cell the edge cuts: the detector
# clips its boxes to the photograph, so a cut cell's box ends on the edge itself.
EDGE_MARGIN = 2


def _area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def box_iou(a, b) -> float:
    """Intersection over union of two boxes; 0 for boxes that do not overlap."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def covered_share(inner, outer) -> float:
    """The share of box ``inner``'s area that lies inside box ``outer``; 0 for an empty box."""
    area = _area(inner)
    return _intersection(inner, outer) / area if area > 0 else 0.0


def match_boxes(first, second, min_iou=0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, best overlap first: (index in first, index in second, IoU)."""
    pairs = sorted(
        ((box_iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)), reverse=True
    )
    matched, used_first, used_second = [], set(), set()
    for overlap, i, j in pairs:
        if overlap < min_iou or i in used_first or j in used_second:
            continue
        matched.append((i, j, overlap))
        used_first.add(i)
        used_second.add(j)
    return matched


def touches_edge(box, width, height, margin=EDGE_MARGIN) -> bool:
    """Whether a box in a width x height photograph reaches within ``margin`` px of its edge."""
    x0, y0, x1, y1 = box
    return x0 <= margin or y0 <= margin or x1 >= width - margin or y1 >= height - margin


def holds_centre(box, width, height) -> bool:
    """Whether a box covers the middle of a width x height photograph."""
    x0, y0, x1, y1 = box
    return x0 <= width / 2 <= x1 and y0 <= height / 2 <= y1


def cut_by_edge(box, width, height, touches_surround=False) -> bool:
    """The site's edge rule: whether the cell in ``box`` is one the photograph's edge cuts, which
    the differential leaves out (a reviewer may count it in). ``touches_surround``: the box reaches
    the black around an eyepiece's round field (classifier.field_of_view), an edge as well.

    A field of a smear cuts cells at its edges, and the next field may show them again. A cell
    that reaches from the photograph's middle to its edge is another case: the photograph was
    framed on it (a tight crop of one cell, an analyser's or a lab's own), so it is counted.
    On a field the middle cell never reaches the edge unless it spans half the field."""
    return (touches_edge(box, width, height) or touches_surround) and not holds_centre(box, width, height)

