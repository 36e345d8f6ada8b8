"""The per-source classifier benchmark and the leave-one-source-out matrix, on two tiny drawn
sources and networks trained on them for one epoch."""

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic_cells import draw_cell, write_cell_folder

ROOT = Path(__file__).resolve().parents[2]
# The recipe every run of the matrix here is trained with: a one-epoch paper network.
RECIPE = dict(architecture="paper", task="4class", epochs=1, batch_size=8)


def load_bench(name):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(f"bench_{name}_script", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # A dataclass looks its module up by name while it is being defined.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Two sources (the second with a type no network here knows in its TEST), a run trained on
    each, and a stand-in for the run on both."""
    import classifier.dataset

    root = tmp_path_factory.mktemp("sources")
    cache = classifier.dataset.DEFAULT_CACHE_DIR
    classifier.dataset.DEFAULT_CACHE_DIR = root / "cache"
    try:
        first = write_cell_folder(root / "lab-a", per_class=6, test_per_class=2, seed=1)
        second = write_cell_folder(root / "lab-b", per_class=6, test_per_class=2, seed=2)
        basophils = second / "TEST" / "BASOPHIL"
        basophils.mkdir()
        import numpy as np

        rng = np.random.default_rng(3)
        for k in range(3):
            draw_cell("NEUTROPHIL", rng).save(basophils / f"basophil_{k}.jpeg")
        bench = load_bench("sources")
        runs = root / "runs"
        settings = dict(RECIPE)
        # What a run on both would be; a stand-in here (several data folders are the training
        # package's to take), so only the single-source runs are trained.
        bench.train_run([str(first)], runs / "lab-a", settings)
        shutil.copytree(runs / "lab-a", runs / "lab-a+lab-b")
        results, trained_on = bench.run_matrix([str(first), str(second)], runs, settings)
        yield bench, results, trained_on, runs, (first, second)
    finally:
        classifier.dataset.DEFAULT_CACHE_DIR = cache


def test_each_source_alone_and_all_together_are_trained_once_and_measured_on_every_source(matrix):
    bench, results, trained_on, runs, (first, second) = matrix
    assert [name for name, _ in bench.training_sets([str(first), str(second)])] == [
        "lab-a", "lab-b", "lab-a+lab-b"]
    assert sorted(path.name for path in runs.iterdir()) == ["lab-a", "lab-a+lab-b", "lab-b"]
    assert trained_on == {"lab-a": {"lab-a"}, "lab-b": {"lab-b"}, "lab-a+lab-b": {"lab-a", "lab-b"}}
    for reports in results.values():
        assert set(reports) == {"lab-a", "lab-b"}
        for report in reports.values():
            assert report["test_n"] == 8 and 0.0 <= bench.four_type_accuracy(report) <= 1.0
            assert "cells_per_second_batch64" not in report  # the matrix is not timed
    foreign = results["lab-a"]["lab-b"]["review"]["foreign"]
    assert foreign["cells"] == 3 and foreign["types"] == {"BASOPHIL": 3}
    assert 0.0 <= foreign["flagged_share"] <= 1.0


def test_the_matrix_marks_the_sources_a_run_never_saw(matrix):
    from classifier.inference import CellClassifier

    bench, results, trained_on, runs, _ = matrix
    lines = bench.matrix_lines(results, trained_on)
    text = "\n".join(lines)
    accuracy_matrix = lines[: lines.index("")]
    rows = {line.split()[0]: line for line in accuracy_matrix if line.startswith("lab-")}
    accuracy = {run: bench.four_type_accuracy(results[run]["lab-b"]) for run in results}
    assert f"{accuracy['lab-a']:.1%}*" in rows["lab-a"]  # lab-b is unseen for lab-a
    assert "*" not in rows["lab-a+lab-b"]
    unseen = [line for line in lines if line.startswith("unseen")]
    assert len(unseen) == 2 and unseen[0].startswith("unseen lab-b for lab-a: ")
    assert "cells of types it has no class for: " in unseen[0] and "of 3 flagged" in unseen[0]
    assert "errors caught" in text and "cells flagged / errors caught" in text
    # Each run flags at the threshold it fitted on its validation cells, as the site would.
    metrics = CellClassifier.from_directory(runs / "lab-a").metadata["metrics"]
    fitted = metrics["review"]["confidence_threshold"]
    assert results["lab-a"]["lab-b"]["review_threshold"] == fitted
    assert f"lab-a {fitted:.2f}" in text


def test_with_training_off_the_runs_there_are_measured_and_the_missing_named(matrix, tmp_path, capsys):
    bench, results, _, runs, (first, second) = matrix
    with pytest.raises(LookupError, match="no run folder .*lab-a"):
        bench.run_matrix([str(first), str(second)], tmp_path / "empty", RECIPE, train=False)

    kept = tmp_path / "kept"
    shutil.copytree(runs / "lab-a+lab-b", kept / "lab-a+lab-b")  # the single-source runs cut short
    partial, trained_on = bench.run_matrix([str(first), str(second)], kept, RECIPE, train=False)

    assert list(partial) == ["lab-a+lab-b"] and trained_on == {"lab-a+lab-b": {"lab-a", "lab-b"}}
    assert partial["lab-a+lab-b"]["lab-b"]["test"] == results["lab-a+lab-b"]["lab-b"]["test"]
    assert "left out: no run folder" in capsys.readouterr().err
    assert "lab-a+lab-b" in "\n".join(bench.matrix_lines(partial, trained_on))


def test_a_kept_run_of_another_recipe_is_refused_not_measured_as_this_ones(matrix, tmp_path):
    """Runs are kept by folder name; a folder trained with other settings (an earlier recipe, a
    longer run) must not print its figures under today's recipe."""
    bench, _, _, runs, (first, second) = matrix
    kept = tmp_path / "kept"
    shutil.copytree(runs / "lab-a+lab-b", kept / "lab-a+lab-b")
    longer = {**RECIPE, "epochs": 3, "jpeg": 0.5}

    with pytest.raises(bench.RecipeOfAnotherRun) as refused:
        bench.run_matrix([str(first), str(second)], kept, longer, train=False)

    message = str(refused.value)
    assert "lab-a+lab-b holds a run of another recipe: " in message
    assert "epochs 1 (asked: 3)" in message and "jpeg 0.3 (asked: 0.5)" in message
    assert "batch_size" not in message and "architecture" not in message
    assert bench.main(["--data", str(first), "--data", str(second), "--runs", str(kept), "--no-train",
                       "--arch", "paper", "--task", "4class", "--epochs", "3"]) == 2


def test_speed_is_timed_on_a_fixed_random_draw_of_the_split_not_its_first_type(matrix):
    """A split lists its files type by type: its first cells are all of one type."""
    from classifier.inference import CellClassifier

    _, _, _, runs, (first, _) = matrix
    classify = load_bench("classify")
    types = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
    listed = [f"{name}_{k}" for name in types for k in range(100)]
    drawn = classify.speed_sample(listed, count=64)
    assert drawn == classify.speed_sample(listed, count=64) and len(set(drawn)) == 64
    assert {name.split("_")[0] for name in drawn} == set(types)

    classifier = CellClassifier.from_directory(runs / "lab-a")
    report = classify.source_benchmark(classifier, first)
    printed = "\n".join(classify.source_lines(report, list(classifier.class_names)))

    assert 0.0 <= report["looked_again_batch64"] <= 1.0 and 0.0 <= report["looked_again_test"] <= 1.0
    assert report["cells_per_second_batch64"] > 0 and report["ms_per_cell_batch1"] > 0
    assert "timed on 256 TEST cells drawn at random; second looks taken of " in printed


def test_the_classifier_benchmark_reports_every_source_and_the_classes_it_shares(matrix, tmp_path, capsys):
    from classifier.inference import CellClassifier

    _, _, _, runs, (first, second) = matrix
    classify = load_bench("classify")
    partial = tmp_path / "lab-c"
    shutil.copytree(first / "TEST", partial / "TEST")
    shutil.rmtree(partial / "TEST" / "MONOCYTE")  # a lab whose slides held no monocyte
    classifier = CellClassifier.from_directory(runs / "lab-a")

    report = classify.run_benchmark(classifier, [first, second, partial], speed=False)
    classify.print_report(report)

    printed = capsys.readouterr().out
    assert [source["name"] for source in report["sources"]] == ["lab-a", "lab-b", "lab-c"]
    assert printed.count("TEST (n=8): accuracy") == 2 and "TEST (n=6): accuracy" in printed
    assert "scored on the 3 of the network's classes this source holds" in printed
    assert "cells of types the network has no class for (BASOPHIL 3)" in printed
    # Runs fit the out-of-distribution score: the flag takes it beside the confidence.
    assert report["has_ood_score"] and "or out-of-distribution score above 1), on TEST" in printed
    assert "  confidence alone: " in printed
    lab_c = report["sources"][2]
    assert lab_c["restricted_to"] == ["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"]
    assert len(lab_c["test"]["confusion_matrix"]) == 3
    review = lab_c["review"]
    assert review["flagged_share"] >= review["confidence_only"]["flagged_share"]
    assert review["flagged_share"] >= review["unfamiliar_share"]


def test_the_classifier_benchmark_says_what_the_site_would_score_where_no_cell_is_found(matrix, tmp_path):
    from PIL import Image

    from classifier.detection import detect_leukocytes
    from classifier.inference import CellClassifier
    from classifier.model_folder import BUNDLED_MODELS_DIR, is_model_folder
    from classifier.rendering import decode_rgb

    _, _, _, runs, (first, _) = matrix
    folder = BUNDLED_MODELS_DIR / "leukonet-gn-8class"
    if not is_model_folder(folder):
        pytest.skip(f"bundled model {folder} not present")
    classify = load_bench("classify")
    lab = tmp_path / "lab-d"
    shutil.copytree(first / "TEST", lab / "TEST")
    size = Image.open(next((lab / "TEST" / "NEUTROPHIL").iterdir())).size
    # Tinted as a stained slide's background is: one without colour is skipped, as upload refuses it.
    Image.new("RGB", size, (242, 220, 230)).save(lab / "TEST" / "NEUTROPHIL" / "bare_slide.png")
    photographs = sorted((lab / "TEST").rglob("*.*"))
    unlocated = sum(not detect_leukocytes(decode_rgb(path.read_bytes())).cells for path in photographs)

    report = classify.source_benchmark(CellClassifier.from_directory(folder), lab, speed=False)
    printed = "\n".join(classify.source_lines(report, list(report["held_classes"])))

    assert report["test_n"] == len(photographs) == 9 and report["test_unlocated"] == unlocated >= 1
    assert 0 <= report["test"]["accuracy"] - report["test_accuracy_unlocated_wrong"] <= unlocated / 9 + 1e-9
    assert (f"the detector found no cell on {unlocated} photograph" in printed and
            f"counting them wrong, accuracy {report['test_accuracy_unlocated_wrong']:.4f}" in printed)
    # A network that reads the whole field locates nothing: the line is not for it.
    whole_field = classify.source_benchmark(CellClassifier.from_directory(runs / "lab-a"), lab, speed=False)
    assert "test_unlocated" not in whole_field


def test_the_benchmark_reports_the_ece_a_sources_own_temperature_would_give():
    import numpy as np

    bench = load_bench("classify")
    names = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    # An overconfident network: 60% right, yet 97% sure of every call.
    called = np.where(rng.random(400) < 0.6, y, (y + 1) % 4)
    raw = np.full((400, 4), 0.01)
    raw[np.arange(400), called] = 0.97

    class Calls:
        calibrated = raw
        uncalibrated = raw

    Calls.y = y
    served_only = bench._accuracy_figures(Calls, names)
    assert "ece_own_temperature" not in served_only
    flattened = bench._accuracy_figures(Calls, names, own_temperature=3.0)
    assert flattened["own_temperature"] == 3.0
    assert flattened["ece_own_temperature"] < flattened["ece_after_temperature"] - 0.2
    unchanged = bench._accuracy_figures(Calls, names, own_temperature=1.0)
    assert unchanged["ece_own_temperature"] == pytest.approx(unchanged["ece_after_temperature"])


def test_a_source_with_fewer_types_also_gets_the_ece_of_the_probabilities_as_served():
    import numpy as np

    bench = load_bench("classify")
    names = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL", "PLATELET"]
    y = np.random.default_rng(5).integers(0, 4, 300)  # the source holds no platelet
    # Every call right and 0.6 sure, 0.3 left on platelet: renormalised over the four types the
    # source holds, each call reads 0.6 / 0.7 sure; as served, 0.6.
    served = np.full((300, 5), 0.1 / 3)
    served[np.arange(300), y] = 0.6
    served[:, 4] = 0.3

    class Calls:
        calibrated = served
        uncalibrated = served

    Calls.y = y
    figures = bench._accuracy_figures(Calls, names)
    assert figures["restricted_to"] == names[:4]
    assert figures["ece_after_temperature"] == pytest.approx(1 - 0.6 / 0.7)
    assert figures["ece_as_served"] == pytest.approx(0.4)
    # A source holding every type is read as served already: no second figure.
    Calls.y = np.arange(300) % 5
    assert "restricted_to" not in (every_type := bench._accuracy_figures(Calls, names))
    assert "ece_as_served" not in every_type


def test_a_flatter_temperature_sends_more_of_an_overconfident_networks_errors_to_review():
    import numpy as np

    bench = load_bench("classify")
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 400)
    called = np.where(rng.random(400) < 0.6, y, (y + 1) % 4)
    raw = np.full((400, 4), 0.01)
    raw[np.arange(400), called] = 0.97
    calls = bench.SplitCalls(images=[], y=y, calibrated=raw, uncalibrated=raw, ood_scores=None,
                             located=np.ones(400, bool), foreign={})

    served = bench.review_figures(calls, 0.8)
    flattened = bench.review_figures(bench.at_temperature(calls, 3.0), 0.8)
    assert served["errors_caught"] == 0.0 and served["flagged_share"] == 0.0
    assert flattened["errors_caught"] == 1.0 and flattened["flagged_share"] == 1.0
    kept = bench.at_temperature(calls, 1.0)
    assert np.allclose(kept.calibrated, raw / raw.sum(axis=1, keepdims=True))


def test_a_hidden_folder_beside_the_class_folders_is_no_type_of_the_benchmark(tmp_path):
    # Training passes a hidden folder by (.ipynb_checkpoints/, a disk's .Trashes/); the benchmark
    # reported it as a type the network lacks, ".IPYNB_CHECKPOINTS 0" among the unfamiliar cells.
    data = write_cell_folder(tmp_path / "lab", per_class=2, test_per_class=1)
    (data / "TEST" / "BASOPHIL").mkdir()
    draw_cell("NEUTROPHIL", np.random.default_rng(0)).save(data / "TEST" / "BASOPHIL" / "b.jpeg")
    (data / "TEST" / ".ipynb_checkpoints").mkdir()
    known, foreign = load_bench("classify")._split_images(data / "TEST", "4class", "TEST", {})
    assert len(known) == 4 and {name: len(images) for name, images in foreign.items()} == {"BASOPHIL": 1}


def test_the_classifier_benchmark_measures_the_review_flag_without_test_copies_of_train_files(
        tmp_path, monkeypatch, capsys):
    """The benchmark printed TEST's accuracy without photographs of cells the network learnt from
    (byte-for-byte copies of its TRAIN files here), yet its review flag over the whole split, copies
    included, which it calls surely and seldom flags: a flag rate read as held out that was not."""
    import classifier.dataset
    from classifier.inference import CellClassifier
    from classifier.model_folder import BUNDLED_MODELS_DIR, is_model_folder, read_metadata, write_model_folder

    bundled = BUNDLED_MODELS_DIR / "leukonet"
    if not is_model_folder(bundled):
        pytest.skip(f"bundled model {bundled} not present")
    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=2, test_per_class=2)
    # The same TEST without the copies: a source none of whose photographs the network learnt from.
    held_out = tmp_path / "held-out"
    shutil.copytree(data / "TEST", held_out / "TEST")
    copies_only = tmp_path / "copies-only"
    for name in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE"):
        train_file = sorted((data / "TRAIN" / name).iterdir())[0]
        shutil.copy(train_file, data / "TEST" / name / f"copy-of-{train_file.name}")
        (copies_only / "TEST" / name).mkdir(parents=True)
        shutil.copy(train_file, copies_only / "TEST" / name / f"copy-of-{train_file.name}")
    folder = write_model_folder(tmp_path / "net", (bundled / "model.keras").read_bytes(),
                                {**read_metadata(bundled), "dataset_path": str(data)})
    classify = load_bench("classify")

    report = classify.run_benchmark(CellClassifier.from_directory(folder), [data, held_out, copies_only],
                                    speed=False)
    classify.print_report(report)

    printed = capsys.readouterr().out.splitlines()
    with_copies, never_trained_on, _ = report["sources"]
    assert with_copies["test_n"] == 11 and with_copies["test_without_same_cell"]["n"] == 8
    flag = with_copies["test_without_same_cell"]["review_flag"]
    alone = never_trained_on["review"]
    assert flag["cells"] == 8 and flag["confidence_threshold"] == with_copies["review_threshold"]
    assert (flag["flagged_share"], flag["errors"]) == (alone["flagged_share"], alone["errors"])
    if alone["errors"]:
        assert flag["errors_caught"] == alone["errors_caught"]
    # Printed under the whole split's figures (its line, then how the flag is made up), as the
    # accuracy without them is under the whole split's.
    whole = next(k for k, line in enumerate(printed) if line.startswith("review flag as the site raises it"))
    assert printed[whole + 2].startswith(
        f"  on TEST without same_cell_in_train (n=8): {flag['flagged_share']:.1%} of cells flagged, ")
    # Where no photograph is marked, the flag's figures are the whole split's: printed once, as before;
    # where every one is, there is no held-out flag rate to print.
    assert "test_without_same_cell" not in never_trained_on
    assert [line for line in printed if "on TEST without same_cell_in_train" in line] == [
        printed[whole + 2], "  on TEST without same_cell_in_train: none; every TEST image is marked so"]
