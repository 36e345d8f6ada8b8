"""The site's edge rule (classifier.boxes.cut_by_edge), on the boxes the detector gives."""

import pytest

from classifier.boxes import cut_by_edge


@pytest.mark.parametrize("box, cut", [
    ((223, 0, 340, 122), True),  # a field of a smear: a cell the top edge cuts
    ((0, 200, 120, 320), True),  # and the left edge
    ((50, 200, 230, 370), False),  # whole
    ((200, 0, 440, 300), False),  # framed on: from the middle to the top edge
    ((0, 0, 640, 480), False),  # a crop no larger than its cell
    # Within EDGE_MARGIN (2 px) of an edge is at it, on every side; one pixel further in is whole.
    ((2, 200, 120, 320), True), ((3, 200, 120, 320), False),
    ((50, 2, 170, 122), True), ((50, 3, 170, 122), False),
    ((520, 200, 638, 320), True), ((520, 200, 637, 320), False),
    ((50, 360, 170, 478), True), ((50, 360, 170, 477), False),
])
def test_a_cell_the_edge_cuts_is_one_the_photograph_was_not_framed_on(box, cut):
    assert cut_by_edge(box, 640, 480) is cut


def test_a_tight_crop_of_one_cell_counts_it_and_leaves_out_a_neighbours_sliver():
    # 128x128 px around a cell whose estimated box runs past the crop on three sides.
    assert not cut_by_edge((2, 0, 128, 110), 128, 128)
    assert cut_by_edge((100, 90, 128, 128), 128, 128)
