"""bench/detect.py: the smear pipeline is also read as the site's formula counts."""

from types import SimpleNamespace

from tests.classifier.test_bench_sources import load_bench

bench = load_bench("detect")


def cell(predicted_type, box):
    return SimpleNamespace(predicted_type=predicted_type, box=box)


def test_the_formula_leaves_out_cells_the_edge_cuts_and_calls_that_are_no_leukocyte():
    cells = [  # best detection first, in a 640x480 photograph
        cell("NEUTROPHIL", (223, 0, 340, 122)),  # cut by the top edge
        cell("PLATELET", (400, 300, 440, 340)),
        cell("MONOCYTE", (50, 200, 230, 370)),
        cell("ERYTHROBLAST", (300, 100, 360, 160)),
        cell("EOSINOPHIL", (450, 50, 600, 200)),
        cell("LYMPHOCYTE", (460, 250, 560, 350)),
    ]
    assert bench.counted_calls(cells, 640, 480, 2) == ["EOSINOPHIL", "MONOCYTE"]
    assert bench.counted_calls(cells[:2], 640, 480, 1) == []
    # A binary network's calls are their own group: every one of them is a leukocyte.
    assert bench.counted_calls([cell("POLYNUCLEAR", (10, 10, 90, 90))], 640, 480, 1) == ["POLYNUCLEAR"]


def test_a_smear_is_right_when_its_calls_are_its_labels_and_binary_right_by_group():
    score = bench.PipelineScore()
    score.add("a", ["NEUTROPHIL"], ["NEUTROPHIL"])
    score.add("b", ["EOSINOPHIL"], ["NEUTROPHIL"])  # wrong type, right group
    score.add("c", ["NEUTROPHIL"], [])  # nothing counted
    score.add("d", ["MONOCYTE"], ["PLATELET"])
    assert (score.smears, score.right, score.right_binary) == (4, 1, 2)
    assert score.wrong == ["b: labelled EOSINOPHIL, got NEUTROPHIL", "c: labelled NEUTROPHIL, got -",
                           "d: labelled MONOCYTE, got PLATELET"]
    assert score.shares() == "0.250 (1/4), binary 0.500 (2/4)"


def test_the_edge_rule_is_read_against_the_annotated_boxes():
    truth = [(23, 229, 204, 421), (2, 187, 228, 359), (300, 0, 400, 90), (400, 100, 500, 200)]
    found = [(30, 218, 202, 480), (34, 188, 212, 363), (305, 0, 398, 95), (405, 98, 498, 205)]
    matched = [(k, k, 0.8) for k in range(4)]
    # A box stretched to the bottom edge (a platelet clump joined to the nucleus) leaves a whole
    # cell out; a box short of a cut cell's edge counts it; both cut, or both clear, agree.
    assert bench.edge_disagreements(truth, found, matched, 640, 480) == ([(0, 0)], [(1, 1)])


def test_the_eyepiece_part_reads_the_edge_rule_against_the_annotated_boxes(tmp_path):
    import cv2

    from tests.classifier.test_field_of_view import slide

    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    photograph = tmp_path / "JPEGImages" / "BloodImage_00000.jpg"
    cv2.imwrite(str(photograph), cv2.cvtColor(slide(), cv2.COLOR_RGB2BGR))
    objects = "".join(
        f"<object><name>WBC</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
        for x0, y0, x1, y1 in ((290, 200, 370, 280), (110, 200, 190, 280)))
    (tmp_path / "Annotations" / "BloodImage_00000.xml").write_text(f"<annotation>{objects}</annotation>")

    # A circle 360 px wide: the cell at x 110-190 reaches out of it, the one in the middle does not.
    figures = bench.benchmark_eyepiece(tmp_path, 0.75)

    assert (figures.truths, figures.matched) == (2, 2)
    assert (figures.cut_agreed, figures.cut_annotated) == (1, 1)
    assert (figures.whole_agreed, figures.whole_annotated) == (1, 1)
    assert figures.warned == 0
