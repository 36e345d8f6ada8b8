"""Adapting a trained network to a lab's reviewed cells, on tiny drawn cells: cross-validated (each
cell its own photograph here), a replay of its own sources, the score fitted again, clear refusals
and cancellation."""

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from classifier.errors import TrainingCancelled, TrainingDataError
from classifier.model_folder import read_model_folder
from classifier.training import TrainingConfig, train_classifier
from classifier.training.adaptation import (
    AdaptationConfig,
    adapt_classifier,
    lab_cells,
    stratified_folds,
)
from tests.synthetic_cells import draw_cell, write_cell_folder


def write_windows(folder, per_class, seed, types=("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")):
    """Reviewed cells as the site keeps them: 240x320 context windows (PNG) and the reviewer's type."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cells = []
    for name in types:
        for k in range(per_class):
            path = folder / f"{name.lower()}_{k}.png"
            draw_cell(name, rng).save(path)
            cells.append((str(path), name))
    return cells


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    data = write_cell_folder(root / "lab-a", per_class=5, test_per_class=2, seed=1)
    config = TrainingConfig(data_dir=str(data), architecture="paper", task="4class", epochs=1,
                            batch_size=8, cache_dir=str(root / "cache"))
    folder = train_classifier(config).save(root / "model")
    model_bytes, metadata = read_model_folder(folder)
    return SimpleNamespace(root=root, data=data, model_bytes=model_bytes, metadata=metadata)


def adaptation(base, reviewed, **options):
    return AdaptationConfig(model_bytes=base.model_bytes, metadata={**base.metadata, "label": "v1"},
                            reviewed=reviewed, data_dir=[str(base.data), "/nowhere/lab-gone"],
                            replay_per_class=3, epochs=1, folds=2, batch_size=8,
                            cache_dir=str(base.root / "cache"), **options)


def test_folds_are_stratified_by_type_and_cover_every_cell():
    labels = np.array([0] * 4 + [1] * 3 + [2])
    folds = stratified_folds(labels, 2, seed=3)
    assert sorted(np.bincount(folds).tolist()) == [4, 4]
    assert set(folds[labels == 0].tolist()) == {0, 1}


def test_types_the_network_lacks_are_left_out_and_counted(base, tmp_path):
    cells = write_windows(tmp_path, 1, 5) + [("/x/a.png", "BASOPHIL"), ("/x/b.png", "ARTEFACT")]
    chosen = lab_cells(cells, "4class")
    assert len(chosen.images) == 4 and chosen.left_out == {"ARTEFACT": 1, "BASOPHIL": 1}


def test_an_adaptation_is_cross_validated_replays_its_sources_and_refits_its_score(base, tmp_path):
    reviewed = write_windows(tmp_path / "windows", 2, 7) + [("/x/b.png", "BASOPHIL")]
    reports = []
    # One of the lab's photographs is a TEST file of the replayed source, byte for byte.
    tuned_on = sorted((base.data / "TEST").rglob("*.*"))[0]
    result = adapt_classifier(adaptation(base, reviewed, lab_photograph_checksums=frozenset(
        {hashlib.sha256(tuned_on.read_bytes()).hexdigest()})), on_epoch=reports.append)

    record = result.metrics["adaptation"]
    assert record["cells"] == 8 and record["per_class"] == {
        "EOSINOPHIL": 2, "LYMPHOCYTE": 2, "MONOCYTE": 2, "NEUTROPHIL": 2}
    assert record["left_out"] == {"BASOPHIL": 1} and record["folds"] == 2
    cv = record["cross_validated"]
    assert cv["n"] == 8 and 0.0 <= cv["accuracy"] <= 1.0
    assert sum(map(sum, cv["confusion_matrix"])) == 8
    assert record["before"]["n"] == 8
    assert record["replay"]["cells"] == 12 and record["replay"]["sources"] == ["lab-a"]
    assert record["replay"]["missing"] == ["/nowhere/lab-gone"]
    # Reviewed cells are mostly those the network was unsure of: no sample to calibrate on.
    assert record["temperature_fitted_on"].startswith("kept from the version adapted")
    assert result.metrics["temperature"] == base.metadata["temperature"]
    # Each replayed source's TEST figures, as a training run stores them, but for the file the lab's
    # cells came from: left out, and counted.
    assert result.metrics["TEST"]["n"] == 7 and result.metrics["sources"]["lab-a"]["TEST"]["n"] == 7
    assert record["test_left_out"] == {"lab-a/TEST": 1}
    assert result.metrics["ood"]["threshold_fitted_on"] == "training cells"
    # Too few cells to fit the review threshold to a budget: the version's is kept, and says whose.
    kept = base.metadata["metrics"]["review"]["confidence_threshold"]
    assert result.metrics["review"]["confidence_threshold"] == kept
    assert result.metrics["review"]["carried_from"] == "v1"
    assert result.metadata["extra_samples"] == 8
    # Two folds and the final fine-tune, one epoch each, as one progress count; then the TEST sets.
    assert [(r["epoch"], r["epochs"]) for r in reports if "loss" in r] == [(1, 3), (2, 3), (3, 3)]
    assert reports[-2]["stage"] == "fine-tune on every reviewed cell"
    assert reports[-1]["stage"] == "evaluating on each source's TEST" and reports[-1]["epoch"] == 3

    from classifier.inference import CellClassifier

    adapted = CellClassifier.from_bytes(result.model_bytes, result.metadata, runtime="tensorflow")
    assert adapted.has_ood_score and list(adapted.class_names) == list(base.metadata["class_names"])


@pytest.mark.parametrize("count, words", [
    (0, "No reviewed cell of a type v1 knows (1 more of types v1 has no class for: basophil 1)"),
    (3, "at least 5 reviewed cells of the types v1 knows; there are 3"),
])
def test_too_few_usable_cells_are_refused_with_the_reason(base, tmp_path, count, words):
    reviewed = write_windows(tmp_path, 1, 2)[:count] + [("/x/b.png", "BASOPHIL")]
    with pytest.raises(TrainingDataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        adapt_classifier(adaptation(base, reviewed))


def test_an_adaptation_stops_when_cancelled(base, tmp_path):
    reviewed = write_windows(tmp_path, 2, 9)
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(TrainingCancelled):
        adapt_classifier(adaptation(base, reviewed), should_stop=should_stop)
    assert Path(reviewed[0][0]).is_file()


def test_a_replayed_test_folder_of_no_photographs_is_refused_before_the_fine_tune(base, tmp_path):
    """A replayed source's TEST folder of git-lfs pointers failed an adaptation only once it was
    tuned and measured; it is refused before the first epoch, naming the folder."""
    data = shutil.copytree(base.data, tmp_path / "lab-a")
    for path in (data / "TEST").rglob("*.jpeg"):
        path.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    config = replace(adaptation(base, write_windows(tmp_path / "cells", 2, 5)), data_dir=[str(data)])
    epochs = []
    with pytest.raises(TrainingDataError, match=f"none of the 8 images in {data / 'TEST'} could be read"):
        adapt_classifier(config, on_epoch=epochs.append)
    assert epochs == []
