"""Knowing when the network does not know: the out-of-distribution score a run fits and stores in
its network, the review decision that weighs it beside confidence, and the served temperature
that weighs each source alike, on a tiny network trained on drawn fields."""

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from classifier import calibration, dataset, fit_review_cli, ood, second_look
from classifier.architectures import DEFAULT_INPUT_SPEC, build_model
from classifier.inference import CellCalls, CellClassifier
from classifier.labels import FOUR_CLASSES
from classifier.training import (
    TrainingConfig,
    model_to_bytes,
    train_classifier,
    trust,
    validation_predictions,
)
from classifier.training.trust import served_temperature
from tests.classifier.drawn_fields import draw_field, write_split

# Ruifrok & Johnston's optical densities of haematoxylin, eosin and DAB (rows), as scikit-image's
# rgb2hed has them: a re-staining scales each dye's amount.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


def restained(rgb, haematoxylin, eosin):
    """The photograph as a slide stained with these multiples of each dye would look."""
    density = -np.log(np.maximum(rgb.astype(np.float64), 1.0) / 255.0)
    stains = density @ np.linalg.inv(RGB_FROM_HED) * np.array([haematoxylin, eosin, 1.0])
    return np.clip(255.0 * np.exp(-(stains @ RGB_FROM_HED)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    write_split(root / "data", "TRAIN", 12)
    write_split(root / "data", "TEST", 2, start=50)
    config = TrainingConfig(
        data_dir=str(root / "data"), architecture="leukonet", task="4class", epochs=2, batch_size=8,
        cache_dir=str(root / "cache"),
    )
    result = train_classifier(config)
    return SimpleNamespace(root=root, result=result, folder=result.save(root / "model"))


def prepared(classifier, images, cache_dir):
    inputs, ok, _ = dataset.load_prepared(images, classifier.input_spec, 1.0, "image", cache_dir=cache_dir)
    assert ok.all()
    return inputs


def test_a_run_carries_its_score_in_its_network_and_records_how_it_was_fitted(trained):
    import keras

    record = trained.result.metrics["ood"]
    assert record["threshold_fitted_on"] == "validation cells" and record["quantile"] == ood.HELD_OUT_QUANTILE
    assert record["threshold_distance"] > 0 and record["dimensions"] == 192
    assert 0 < record["shrinkage"] < 1  # fewer training cells than features: shrunk
    served = CellClassifier.from_directory(trained.folder, runtime="tensorflow")
    assert served.model.output_names == ["probabilities", ood.OUTPUT_NAME]
    assert served.has_ood_score

    windows = [draw_field(name, 900 + k) for k, name in enumerate(FOUR_CLASSES)]
    inputs = served.network_inputs(windows).astype(np.float32) / np.float32(255.0)
    probabilities, keras_scores = (np.asarray(output) for output in served.model(inputs, training=False))
    calls = served.classify(windows, calibrated=False)
    # Serving computes the score in NumPy from the features: the network's own output agrees.
    np.testing.assert_allclose(calls.ood_scores, keras_scores[:, 0], rtol=1e-4)
    np.testing.assert_allclose(calls.probabilities, probabilities, atol=1e-6)
    litert = CellClassifier.from_directory(trained.folder, runtime="litert")
    np.testing.assert_allclose(litert.classify(windows).ood_scores, keras_scores[:, 0], rtol=1e-4)
    # What the pipeline asks for (classifier.second_look): the same scores from its prepared
    # inputs, beside the calls' Grad-CAM.
    prepared = litert.network_inputs(windows)
    served_calls = litert.classify_inputs(prepared)
    np.testing.assert_allclose(served_calls.ood_scores, keras_scores[:, 0], rtol=1e-4)
    assert litert.heatmaps(prepared, served_calls.probabilities.argmax(axis=1)).shape == (4, 96, 96)
    assert served_calls.needs_review(0.0).dtype == bool
    # A copy of the network without its score serves the same calls.
    plain = keras.Model(served.model.input, served.model.outputs[0])
    bare = CellClassifier.from_bytes(model_to_bytes(plain), {**trained.result.metadata, "model_sha256": ""})
    assert not bare.has_ood_score and bare.classify(windows).ood_scores is None
    np.testing.assert_allclose(bare.predict(windows), served.predict(windows), atol=0.05)


def test_the_score_is_higher_on_a_strongly_restained_copy_of_a_validation_image(trained, tmp_path):
    cache = trained.root / "cache"
    validation = validation_predictions(trained.folder, trained.root / "data", cache_dir=cache).images
    assert len(validation) >= 4
    copies = []
    for k, image in enumerate(validation):
        path = tmp_path / f"restained_{k}.png"
        # Pale nuclei on deep pink: red cells carry eosin, so the preparation's stain normalisation
        # on them cannot undo this.
        copy = restained(dataset.decode_image(image.path), haematoxylin=0.3, eosin=2.0)
        cv2.imwrite(str(path), cv2.cvtColor(copy, cv2.COLOR_RGB2BGR))
        copies.append(dataset.LabelledImage(str(path), image.class_name, "COPY"))
    classifier = CellClassifier.from_directory(trained.folder)

    originals = classifier.classify_inputs(prepared(classifier, validation, cache))
    stained = classifier.classify_inputs(prepared(classifier, copies, tmp_path / "cache"))

    assert (stained.ood_scores > originals.ood_scores).all()
    assert (stained.ood_scores > ood.UNFAMILIAR_ABOVE).all()
    # Unfamiliar cells go to review however confident their calls.
    assert stained.needs_review(confidence_threshold=0.0).all()


def test_a_network_trained_without_the_score_predicts_with_score_none():
    import keras

    keras.utils.set_random_seed(0)
    metadata = {"architecture": "leukonet", "task": "4class", "class_names": list(FOUR_CLASSES),
                "input_spec": DEFAULT_INPUT_SPEC["leukonet"], "temperature": 1.0}
    classifier = CellClassifier.from_bytes(model_to_bytes(build_model("leukonet", "4class")), metadata)
    calls = classifier.classify([draw_field(name, 7) for name in FOUR_CLASSES])
    assert calls.ood_scores is None and calls.probabilities.shape == (4, 4)
    threshold = float(np.median(calls.confidence))
    np.testing.assert_array_equal(calls.needs_review(threshold), calls.confidence < threshold)
    assert classifier.classify([]).ood_scores is None


def test_the_review_flag_takes_a_low_confidence_or_an_unfamiliar_cell():
    confidence = [0.95, 0.50, 0.95, 0.50]
    scores = [0.2, 0.2, 3.0, 3.0]
    assert ood.needs_review(confidence, scores, 0.8).tolist() == [False, True, True, True]
    assert ood.needs_review(confidence, None, 0.8).tolist() == [False, True, False, True]
    calls = CellCalls(probabilities=np.array([[0.95, 0.05], [0.5, 0.5]]), ood_scores=np.array([1.5, 0.1]))
    assert calls.needs_review(0.8).tolist() == [True, True]
    assert calls.needs_review(0.4).tolist() == [True, False]


def test_the_review_flag_takes_a_call_under_the_threshold_and_a_score_above_one():
    # The pages say "under the threshold" and "score above 1": a cell at either edge is not flagged
    # for it, one a hair past either is.
    unsure, unfamiliar = ood.review_flags([0.7999, 0.80, 0.8001], [0.9999, 1.0, 1.0001], 0.80)
    assert unsure.tolist() == [True, False, False]
    assert unfamiliar.tolist() == [False, False, True]


def test_the_score_is_the_mahalanobis_distance_to_the_nearest_class_over_the_threshold():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0, 0], [6, 0, 0, 0], [0, 6, 0, 0]], np.float64)
    mixing = rng.normal(size=(4, 4))
    labels = rng.integers(0, 3, 3000)
    features = centres[labels] + rng.normal(size=(3000, 4)) @ mixing
    reference = centres[labels[:1000]] + rng.normal(size=(1000, 4)) @ mixing

    head, record = ood.fit_ood_head(features, labels, 3, (reference, None, None), quantile=0.9)

    means = np.stack([features[labels == k].mean(axis=0) for k in range(3)])
    residuals = features - means[labels]
    covariance = residuals.T @ residuals / len(features)
    shrinkage = record["shrinkage"]
    assert shrinkage == pytest.approx(ood.ledoit_wolf_shrinkage(residuals)) and shrinkage < 0.05
    covariance = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / 4 * np.eye(4)
    precision = np.linalg.inv(covariance)
    probe = rng.normal(size=(50, 4)) * 5
    distances = np.min([np.einsum("nd,de,ne->n", probe - m, precision, probe - m) for m in means], axis=0)
    np.testing.assert_allclose(head(probe), distances / record["threshold_distance"], rtol=1e-8)
    assert np.mean(head(reference) > 1) == pytest.approx(0.1, abs=0.002)
    # The network's own Keras layers compute the same.
    import keras

    inputs = keras.Input((4,))
    logits = keras.layers.Dense(3, name=ood.FEATURE_LAYER)(keras.layers.Identity()(inputs))
    network = keras.Model(inputs, logits)
    with_score = ood.with_ood_output(network, head)
    keras_scores = np.asarray(with_score(probe.astype(np.float32))[1])[:, 0]
    np.testing.assert_allclose(keras_scores, head(probe), rtol=1e-4, atol=1e-5)
    read_back = ood.OodHead.from_model(with_score)
    np.testing.assert_allclose(read_back(probe), head(probe), rtol=1e-5)


def test_each_source_weighs_alike_and_each_photograph_once_in_the_threshold():
    weights = ood.balanced_weights(5, sources=[0, 0, 0, 0, 1], groups=["a", "a", "b", "c", "d"])
    np.testing.assert_allclose(weights, [1 / 12, 1 / 12, 1 / 6, 1 / 6, 1 / 2])
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert ood.weighted_quantile(values, 0.5, weights) == 4.0
    assert ood.weighted_quantile(values, 0.5, np.full(5, 0.2)) == 3.0


def test_the_served_temperature_weighs_each_source_alike():
    rng = np.random.default_rng(1)

    def source(count, overconfidence):
        truth = rng.normal(size=(count, 4)) * 2
        labels = np.array([rng.choice(4, p=calibration.softmax(row[None])[0]) for row in truth])
        return truth * overconfidence, labels

    big_logits, big_labels = source(3000, 3.0)  # three times too sure of itself: T ~ 3
    small_logits, small_labels = source(300, 1.0)  # calibrated: T ~ 1
    logits = np.concatenate([big_logits, small_logits])
    arrays = SimpleNamespace(
        y_val=np.concatenate([big_labels, small_labels]),
        source_names=["big-lab", "small-lab"],
        val_sources=np.repeat([0, 1], [3000, 300]),
    )

    temperature, record = served_temperature(logits, arrays)

    by_source = record["sources"]
    assert by_source["big-lab"]["temperature"] == pytest.approx(3.0, rel=0.15)
    assert by_source["small-lab"]["temperature"] == pytest.approx(1.0, rel=0.25)
    pooled = calibration.fit_temperature(logits, arrays.y_val)  # the big lab would set it
    assert by_source["small-lab"]["temperature"] < temperature < pooled
    assert record["temperature"] == temperature
    big = by_source["big-lab"]
    assert big["validation_cells"] == 3000
    assert big["ece_own_temperature"] < big["ece_served_temperature"] < big["ece_uncalibrated"]


def confidence_flag(probabilities, ood_scores=None):
    """flag_at(threshold) of calls taken once, for fit_review_threshold: a confidence under the
    threshold, or an unfamiliar cell (runs pass the served flag, second_look.Looks.needs_review)."""
    confidence = np.asarray(probabilities, np.float64).max(axis=1)
    return lambda threshold: ood.needs_review(confidence, ood_scores, threshold)


def test_the_review_threshold_is_the_highest_that_keeps_every_source_within_the_budget():
    unsure = np.linspace(0.5, 0.999, 200)  # one source's confidences spread out, the other's all high
    confidence = np.concatenate([unsure, np.full(200, 0.99)])
    probabilities = np.stack([confidence, 1.0 - confidence], axis=1)
    y = np.zeros(400, int)
    y[:20] = 1  # the 20 least sure calls of the first source are wrong
    sources = np.repeat([0, 1], 200)
    names = ["spread", "sure"]
    correct = probabilities.argmax(axis=1) == y
    threshold, record = trust.fit_review_threshold(confidence_flag(probabilities), correct, sources,
                                                   names, budget=0.2)
    assert threshold in trust.REVIEW_THRESHOLD_GRID and record["within_budget"]
    assert record["confidence_threshold"] == threshold and record["fitted_on"] == "validation cells"
    assert record["sources"]["spread"]["flagged_share"] == np.mean(unsure < threshold) <= 0.2
    assert np.mean(unsure < round(threshold + 0.01, 2)) > 0.2  # one step higher overspends the budget
    assert record["sources"]["spread"]["errors_caught"] == 1.0
    assert record["sources"]["sure"] == {"cells": 200, "flagged_share": 0.0, "errors_caught": None}

    # Unfamiliar cells count against the budget too: where they alone overspend it, the lowest
    # threshold is taken and the record says the budget could not be kept.
    scores = np.where(sources == 1, 3.0, 0.1)
    flag_at = confidence_flag(probabilities, scores)
    threshold, record = trust.fit_review_threshold(flag_at, correct, sources, names)
    assert threshold == trust.REVIEW_THRESHOLD_GRID[0] and not record["within_budget"]
    assert record["sources"]["sure"]["flagged_share"] == 1.0


def test_a_run_measures_on_test_the_review_flag_the_site_would_raise(trained):
    from classifier.training.data import labels

    figures = trained.result.metrics["TEST"]["review_flag"]
    threshold = trained.result.metrics["review"]["confidence_threshold"]
    assert figures["confidence_threshold"] == threshold and figures["ood_score"] is True
    # The saved network, as the site's workers serve it, flags the same TEST cells: its first
    # look's confidence or score, or a call its second look changed.
    served = CellClassifier.from_directory(trained.folder)
    images = dataset.list_images(trained.root / "data" / "TEST", "4class", "TEST")
    looks, ok, _ = second_look.classify_images(served, images, "image", cache_dir=trained.root / "cache")
    assert ok.all() and trained.result.metrics["served_by"] == served.serving_runtime == "litert-int8"
    flagged = looks.needs_review(threshold)
    wrong = looks.probabilities.argmax(axis=1) != labels(images, served.class_names)
    assert figures["cells"] == len(images) == 8 and figures["errors"] == int(wrong.sum())
    assert trained.result.metrics["TEST"]["accuracy"] == pytest.approx(1 - wrong.mean())
    assert figures["flagged_share"] == pytest.approx(flagged.mean())
    assert figures["errors_caught"] == (pytest.approx(flagged[wrong].mean()) if wrong.any() else None)


def test_a_run_fits_its_review_threshold_and_the_command_refits_it_from_the_folder(trained, tmp_path, capsys):
    record = trained.result.metrics["review"]
    assert record["confidence_threshold"] in trust.REVIEW_THRESHOLD_GRID
    cells = sum(figures["cells"] for figures in record["sources"].values())
    assert cells == trained.result.metadata["validation_count"]
    served = CellClassifier.from_directory(trained.folder)
    assert served.metadata["metrics"]["review"] == record
    # Fitted on the flag a technologist is shown: the validation cells' as the site serves them,
    # second looks and all, which is what holds each source to the budget.
    assert (record["fitted_on"], record["served_by"]) == ("validation cells, as served", "litert-int8")
    _, _, selection = fit_review_cli.run_recipe(served.metadata, [trained.root / "data"])
    (source,) = selection.sources
    cache = trained.root / "cache"
    looks, ok, _ = second_look.classify_images(served, source.validation, "image", cache_dir=cache)
    flagged = looks.needs_review(record["confidence_threshold"])[ok]
    assert record["sources"][source.name]["flagged_share"] == pytest.approx(flagged.mean())
    assert flagged.mean() <= trust.REVIEW_BUDGET or not record["within_budget"]

    # A folder saved before runs fitted it: the command rebuilds the run's validation split and
    # fits the same threshold.
    folder = Path(shutil.copytree(trained.folder, tmp_path / "model"))
    metadata = json.loads((folder / "metadata.json").read_text())
    del metadata["metrics"]["review"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    data = ["--data", str(trained.root / "data"), "--cache-dir", str(trained.root / "cache")]
    assert fit_review_cli.main(["--model", str(folder), *data]) == 0
    refitted = json.loads((folder / "metadata.json").read_text())["metrics"]["review"]
    assert refitted == record

    # Other data than the network's: refused in one line, the folder left as it was.
    write_split(tmp_path / "other", "TRAIN", 5)
    before = (folder / "metadata.json").read_text()
    capsys.readouterr()
    assert fit_review_cli.main(["--model", str(folder), "--data", str(tmp_path / "other")]) == 2
    assert "validation split holds" in capsys.readouterr().err
    assert (folder / "metadata.json").read_text() == before


def test_the_command_measures_test_as_served_at_the_folders_own_threshold(trained, tmp_path, capsys):
    folder = Path(shutil.copytree(trained.folder, tmp_path / "model"))
    metadata = json.loads((folder / "metadata.json").read_text())
    (name,) = metadata["metrics"]["sources"]
    for place in (metadata["metrics"], metadata["metrics"]["sources"][name]):
        # As a folder trained before runs measured TEST as served: a first look, no flag figures.
        del place["TEST"]["review_flag"]
        place["TEST"]["accuracy"] = 0.123
    del metadata["metrics"]["served_by"]
    metadata["metrics"]["review"]["confidence_threshold"] = 0.97  # kept, not fitted again
    (folder / "metadata.json").write_text(json.dumps(metadata))
    data = ["--data", str(trained.root / "data"), "--cache-dir", str(trained.root / "cache")]
    assert fit_review_cli.main(["--model", str(folder), *data, "--test"]) == 0
    measured = json.loads((folder / "metadata.json").read_text())["metrics"]
    assert measured["review"]["confidence_threshold"] == 0.97 and measured["served_by"] == "litert-int8"
    test = measured["sources"][name]["TEST"]
    assert measured["TEST"] == test and test["review_flag"]["confidence_threshold"] == 0.97
    # What the run itself measured as served, at its own threshold: the same calls; at a higher
    # threshold, as many cells flagged or more.
    at_run = trained.result.metrics["TEST"]
    assert test["accuracy"] == pytest.approx(at_run["accuracy"]) and test["n"] == at_run["n"]
    figures, run_flag = test["review_flag"], at_run["review_flag"]
    assert figures["cells"] == run_flag["cells"] and figures["errors"] == run_flag["errors"]
    assert figures["flagged_share"] >= run_flag["flagged_share"]

    # TEST folders other than the network was measured on: refused, the folder left as it was.
    write_split(tmp_path / "other", "TRAIN", 12)
    write_split(tmp_path / "other", "TEST", 3, start=80)
    before = (folder / "metadata.json").read_text()
    capsys.readouterr()
    other = ["--data", str(tmp_path / "other"), "--cache-dir", str(tmp_path / "cache")]
    assert fit_review_cli.main(["--model", str(folder), *other, "--test"]) == 2
    assert "where the run stored" in capsys.readouterr().err
    assert (folder / "metadata.json").read_text() == before


def test_the_command_refuses_a_folder_of_the_same_name_holding_other_files(trained, tmp_path, capsys):
    folder = Path(shutil.copytree(trained.folder, tmp_path / "model"))
    before = (folder / "metadata.json").read_text()
    cache = ["--cache-dir", str(tmp_path / "cache")]

    def refused(data, *options):
        capsys.readouterr()
        assert fit_review_cli.main(["--model", str(folder), "--data", str(data), *cache, *options]) == 2
        assert (folder / "metadata.json").read_text() == before
        return capsys.readouterr().err

    # One TEST photograph fewer: the cell counts would still be checked only after every call,
    # the per-type counts the run recorded refuse it at once.
    fewer_test = Path(shutil.copytree(trained.root / "data", tmp_path / "a" / "data"))
    next((fewer_test / "TEST" / "LYMPHOCYTE").glob("*")).unlink()
    assert "TEST: cells of each type" in refused(fewer_test, "--test")
    # A TRAIN photograph fewer: refused before anything is fitted, with the type counts.
    fewer_train = Path(shutil.copytree(trained.root / "data", tmp_path / "b" / "data"))
    next((fewer_train / "TRAIN" / "MONOCYTE").glob("*")).unlink()
    assert "data TRAIN: cells of each type" in refused(fewer_train)
    # As many of each type, but one TRAIN photograph another: the run's file-list fingerprint,
    # which names files inside their folder, refuses it (the validation split would differ).
    renamed = Path(shutil.copytree(trained.root / "data", tmp_path / "d" / "data"))
    photograph = next((renamed / "TRAIN" / "MONOCYTE").glob("*"))
    photograph.rename(photograph.with_name("another-" + photograph.name))
    assert "as many cells of each type as the run's, but other files" in refused(renamed)
    # The same data in another place, or reached by a relative path, is the same data.
    same = Path(shutil.copytree(trained.root / "data", tmp_path / "c" / "data"))
    assert fit_review_cli.main(["--model", str(folder), "--data", str(same), *cache]) == 0
    relative = os.path.relpath(trained.root / "data")
    assert fit_review_cli.main(["--model", str(folder), "--data", relative, *cache]) == 0


def test_the_command_measures_a_refits_borrowed_threshold_but_cannot_fit_one(trained, tmp_path, capsys):
    data = str(trained.root / "data")
    refit = train_classifier(TrainingConfig(
        data_dir=data, architecture="leukonet", task="4class", epochs=1, batch_size=8,
        validation_fraction=0, temperature=1.2, review_threshold=0.9, cache_dir=str(trained.root / "cache"),
    ))
    folder = refit.save(tmp_path / "refit")
    cache = ["--cache-dir", str(trained.root / "cache")]
    assert fit_review_cli.main(["--model", str(folder), "--data", data, *cache, "--test"]) == 0
    measured = json.loads((folder / "metadata.json").read_text())["metrics"]["TEST"]["review_flag"]
    assert measured == pytest.approx(refit.metrics["TEST"]["review_flag"])
    assert measured["confidence_threshold"] == 0.9

    metadata = json.loads((folder / "metadata.json").read_text())
    del metadata["metrics"]["review"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    capsys.readouterr()
    assert fit_review_cli.main(["--model", str(folder), "--data", data, *cache]) == 2
    assert "trained on every TRAIN cell: it has no validation split" in capsys.readouterr().err
