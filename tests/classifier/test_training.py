import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from classifier.errors import TrainingCancelled, TrainingDataError
from classifier.labels import FOUR_CLASSES
from classifier.metrics import format_metrics
from classifier.training import TrainingConfig, evaluate_classifier, train_classifier
from tests.classifier.drawn_fields import draw_field, write_split


@pytest.fixture
def tiny_data(tmp_path):
    write_split(tmp_path / "data", "TRAIN", 6)
    write_split(tmp_path / "data", "TEST", 2, start=50)
    return tmp_path / "data"


def config(data, tmp_path, **kwargs):
    defaults = dict(
        architecture="leukonet", task="4class", epochs=1, batch_size=8, cache_dir=tmp_path / "c"
    )
    return TrainingConfig(data_dir=str(data), **{**defaults, **kwargs})


@pytest.fixture(scope="module")
def leukonet_run(tmp_path_factory):
    """A LeukoNet run of two epochs on the tiny set: what it returned, its epoch reports and stages."""
    root = tmp_path_factory.mktemp("leukonet-run")
    write_split(root / "data", "TRAIN", 6)
    write_split(root / "data", "TEST", 2, start=50)
    seen, stages = [], []
    settings = config(root / "data", root, epochs=2, mixup=0.2, validation_seed=3)
    result = train_classifier(settings, on_epoch=seen.append, on_stage=stages.append)
    return SimpleNamespace(result=result, seen=seen, stages=stages, data=root / "data", cache_dir=root / "c")


def test_training_stores_a_loadable_result(leukonet_run, tmp_path):
    from classifier.inference import CellClassifier

    result, seen = leukonet_run.result, leukonet_run.seen
    assert [row["epoch"] for row in seen] == [1, 2]
    assert {"loss", "val_accuracy", "eta_seconds", "elapsed_seconds"} <= set(seen[0])
    # After the last epoch, what the run is doing then (the site's progress says it).
    assert leukonet_run.stages == ["calibrating, fitting the review flag and measuring each source's TEST"]
    assert len(result.history) == 2 and result.class_names == list(FOUR_CLASSES)
    assert result.class_counts and sum(result.class_counts.values()) > 0
    assert "validation" in result.metrics and "TEST" in result.metrics
    assert result.metadata["seed"] == result.seed and result.temperature > 0
    assert len(result.dataset_fingerprint) == 64 and result.skipped_files == 0
    # LeukoNet's inputs are white-balanced, so its stain jitter is the mild one.
    assert result.input_spec["white_balance"] and result.hyperparameters["colour_jitter"] == 0.04
    assert result.input_spec["stain_normalise"]

    loaded = CellClassifier.from_bytes(result.model_bytes, result.metadata)
    windows = [draw_field(name, 999) for name in FOUR_CLASSES]
    again = CellClassifier.from_bytes(result.model_bytes, result.metadata)
    np.testing.assert_allclose(loaded.predict(windows), again.predict(windows), atol=1e-6)
    saved = CellClassifier.from_directory(result.save(tmp_path / "bundle"))
    np.testing.assert_allclose(saved.predict(windows), loaded.predict(windows), atol=1e-6)

    metrics = evaluate_classifier(loaded, leukonet_run.data, "TEST", cache_dir=leukonet_run.cache_dir)
    assert metrics["n"] == 8
    assert "confusion matrix" in format_metrics(metrics)


def test_paper_binary_network_extra_samples_and_unreadable_files_skipped_and_counted(tiny_data, tmp_path):
    (tiny_data / "TRAIN" / "NEUTROPHIL" / "corrupt.jpeg").write_bytes(b"\xff\xd8garbage")
    (tiny_data / "TRAIN" / "NEUTROPHIL" / "empty.png").write_bytes(b"")
    # Upload refuses a greyscale photograph: training learnt from it, a cell without its stain.
    grey = tiny_data / "TRAIN" / "MONOCYTE" / "grey.png"
    cv2.imwrite(str(grey), cv2.cvtColor(draw_field("MONOCYTE", 8), cv2.COLOR_RGB2GRAY))
    (tiny_data / "TEST" / "EOSINOPHIL" / "truncated.jpeg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    extra = tmp_path / "reviewed.png"
    cv2.imwrite(str(extra), cv2.cvtColor(draw_field("MONOCYTE", 7), cv2.COLOR_RGB2BGR))
    settings = config(tiny_data, tmp_path, architecture="paper", task="binary", epochs=1)
    first = train_classifier(settings)
    assert first.skipped_files == 3
    assert sorted((Path(row["path"]).name, row["reason"].split(":")[0]) for row in first.skipped_named) == [
        ("corrupt.jpeg", "not an image, or damaged"), ("empty.png", "not an image, or damaged"),
        ("grey.png", "greyscale")]
    on_test = first.metrics["TEST"]
    assert on_test["skipped_files"] == 1 and on_test["n"] == 8
    assert [Path(row["path"]).name for row in on_test["skipped_named"]] == ["truncated.jpeg"]
    folder_alone = sorted(path.name for path in settings.cache_dir.iterdir())
    result = train_classifier(replace(settings, extra_samples=[(str(extra), "MONOCYTE")]))
    # The reviewed cells, another list each run, leave no file in the cache beside the folder's.
    assert sorted(path.name for path in settings.cache_dir.iterdir()) == folder_alone
    assert result.class_names == ["MONONUCLEAR", "POLYNUCLEAR"]
    assert result.input_spec["mode"] == "field"
    assert result.metadata["extra_samples"] == 1
    assert result.metrics["epoch_choice"] == "best"  # as published: the best epoch is stored
    assert result.metrics["TEST"]["roc_auc"] is not None
    assert result.skipped_files == 3  # read from the cache: still counted, and named
    assert sorted(map(str, result.skipped_named)) == sorted(map(str, first.skipped_named))


def test_refit_trains_on_every_group_with_the_given_temperature(tiny_data, tmp_path):
    seen = []
    settings = config(
        tiny_data,
        tmp_path,
        epochs=2,
        validation_fraction=0.0,
        temperature=1.7,
        temperature_source="run A",
    )
    result = train_classifier(settings, on_epoch=seen.append)
    assert result.temperature == 1.7 and result.metadata["temperature"] == 1.7
    assert "validation" not in result.metrics and result.metadata["validation_count"] == 0
    assert result.metrics["refit"] == {"epochs": 2, "temperature_source": "run A"}
    # Every TRAIN image is trained on: 6 per class.
    assert result.class_counts == {name: 6 for name in FOUR_CLASSES}
    assert result.hyperparameters["best_epoch"] == 2  # the last epoch is kept, none is chosen
    # No validation figures, and None rather than NaN, which JSON (and so the database) refuses.
    assert all(row["val_accuracy"] is None and row["val_loss"] is None for row in seen)
    json.dumps(result.metadata, allow_nan=False)
    assert "TEST" in result.metrics
    # No unseen cells: the out-of-distribution threshold comes from the training cells, higher up.
    ood = result.metrics["ood"]
    assert (ood["threshold_fitted_on"], ood["quantile"]) == ("training cells", 0.975)
    assert ood["training_cells"] == ood["threshold_cells"] == 24
    # Nor any to fit the review threshold on: the site's default applies to it.
    assert "review" not in result.metrics


def test_leukonet_keeps_its_last_epoch_and_is_calibrated_and_measured_on_it(leukonet_run):
    result = leukonet_run.result
    metrics = result.metrics
    assert (metrics["best_epoch"], metrics["epoch_choice"]) == (2, "last")
    # The held-out figures are those of the stored (last) network, whatever an earlier epoch did.
    assert metrics["validation"]["accuracy"] == pytest.approx(result.history[-1]["val_accuracy"])


def test_refit_without_a_temperature_is_refused(tiny_data, tmp_path):
    with pytest.raises(TrainingDataError, match="calibration temperature"):
        train_classifier(config(tiny_data, tmp_path, validation_fraction=0.0))
    with pytest.raises(TrainingDataError, match="validation fraction"):
        train_classifier(config(tiny_data, tmp_path, validation_fraction=1.0, temperature=1.0))


def test_should_stop_cancels(tiny_data, tmp_path):
    with pytest.raises(TrainingCancelled):
        train_classifier(config(tiny_data, tmp_path, epochs=3), should_stop=lambda: True)


@pytest.mark.parametrize(
    "setup, kwargs, message",
    [
        (lambda p: p / "nowhere", {}, "does not exist"),
        (lambda p: p, {}, "not a folder-per-class layout"),
        (lambda p: [(p / n).mkdir() for n in FOUR_CLASSES] and p, {}, "holds no images"),
        (lambda p: p, {"architecture": "resnet900"}, "unknown architecture"),
        (lambda p: p, {"task": "7class"}, "unknown task"),
    ],
)
def test_bad_data_raises_training_data_error(tmp_path, setup, kwargs, message):
    data = setup(tmp_path)
    with pytest.raises(TrainingDataError, match=message):
        train_classifier(config(data, tmp_path, **kwargs))


def test_too_few_images_per_class_names_the_counts(tmp_path):
    write_split(tmp_path, "TRAIN", 3)
    for path in list((tmp_path / "TRAIN" / "MONOCYTE").iterdir())[1:]:
        path.unlink()
    with pytest.raises(TrainingDataError, match=r"at least 2 of each\): MONOCYTE: 1"):
        train_classifier(config(tmp_path, tmp_path))
    with pytest.raises(TrainingDataError, match="at least 5"):
        train_classifier(config(tmp_path, tmp_path, min_images_per_class=5))


@pytest.mark.parametrize("task, optimizer", [("4class", "adamw+cosine"), ("binary", "adam")])
def test_a_run_traces_its_train_step_once(task, optimizer):
    """Keras made the optimizer's and the "accuracy" metric's variables inside the first trace of
    the train step, and tf.function traced it again: 2-3 s more of every run."""
    from classifier.training import Recipe
    from classifier.training.fitting import compile_model, seeded_keras

    keras, _ = seeded_keras(0)
    binary = task == "binary"
    output = keras.layers.Dense(1, activation="sigmoid") if binary else keras.layers.Dense(4, "softmax")
    model = keras.Sequential([keras.Input((3,)), output])
    traces = []
    step = model.train_step

    def counted(data):
        traces.append(data)
        return step(data)

    model.train_step = counted
    compile_model(keras, model, Recipe(architecture="paper", task=task, optimizer=optimizer).resolved(), 2)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2 if binary else 4, 8)
    targets = labels.reshape(-1, 1).astype("float32") if binary else np.eye(4, dtype="float32")[labels]
    history = model.fit(rng.random((8, 3), dtype=np.float32), targets, batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1
    assert len(history.history["accuracy"]) == 2


def test_width_scales_leukonets_filters_and_the_paper_network_keeps_its_own():
    from classifier.architectures import build_model

    def conv_filters(model):
        return [layer.filters for layer in model.layers if layer.name.endswith("_conv")]

    assert conv_filters(build_model("leukonet", "4class")) == [24, 48, 96, 96, 160, 192]
    assert conv_filters(build_model("leukonet", "4class", width=0.5)) == [16, 24, 48, 48, 80, 96]
    with pytest.raises(TrainingDataError, match="its widths are fixed"):
        build_model("paper", "binary", width=2.0)
    with pytest.raises(TrainingDataError, match="width must be a positive number"):
        build_model("leukonet", "4class", width=0)


def test_command_line_refit_takes_the_temperature_of_a_held_out_run(tiny_data, tmp_path, capsys):
    from classifier.train_cli import main

    cache = ["--epochs", "1", "--batch-size", "8", "--quiet", "--no-test", "--cache-dir", str(tmp_path)]
    held_out = tmp_path / "held-out.json"
    # Made under other settings than today's defaults: the refit repeats them unless told otherwise.
    spec = {"height": 64, "width": 64, "mode": "cell", "crop": 128, "white_balance": False}
    held_out.write_text(json.dumps({
        "temperature": 0.8, "seed": 7, "input_spec": spec,
        "metrics": {"best_epoch": 1, "review": {"confidence_threshold": 0.86, "budget": 0.2}},
        "hyperparameters": {"zoom": 0.05, "mixup": 0.4, "batch_size": 4, "weight_decay": 0.01,
                            "width": 0.5}}))
    out = tmp_path / "refit"
    argv = ["--data", str(tiny_data), "--validation-fraction", "0", *cache, "--out", str(out)]
    assert main([*argv, "--temperature-from", str(held_out), "--mixup", "0.2"]) == 0
    saved = json.loads((out / "metadata.json").read_text())
    assert saved["temperature"] == 0.8 and "validation" not in saved["metrics"]
    # The review threshold the run fitted at that temperature comes with it.
    review = saved["metrics"]["review"]
    assert review["confidence_threshold"] == 0.86 and review["refit_from"].startswith(str(held_out))
    assert saved["input_spec"] == spec
    used = saved["hyperparameters"]
    assert (used["zoom"], used["weight_decay"], used["mixup"], used["batch_size"]) == (0.05, 0.01, 0.2, 8)
    assert used["width"] == 0.5
    repeated = capsys.readouterr().out.splitlines()[0]
    assert repeated.startswith("repeating the held-out run's settings: ")
    # Its input spec, and no stain augmentation: the run was stored before that setting existed.
    assert "input_spec {'height': 64" in repeated and "stain_scale 0.0" in repeated
    assert "default" not in saved
    assert main([*argv, "--temperature-from", str(held_out), "--mark-default"]) == 0
    assert json.loads((out / "metadata.json").read_text())["default"] is True
    assert saved["metrics"]["refit"]["temperature_source"].startswith(str(held_out))
    printed = capsys.readouterr().out
    assert "trained on every TRAIN group" in printed
    assert "epoch 1/1 loss=" in printed and "val_" not in printed

    assert main(argv) == 2
    assert "calibration temperature" in capsys.readouterr().err
    assert main([*argv, "--temperature-from", str(tmp_path / "missing")]) == 2
    assert "no calibration temperature in" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"temperature": 0.9, "architecture": "paper",
                                 "hyperparameters": {"zoom": 0.2, "epochs": 3}}))
    assert main([*argv, "--temperature-from", str(held_out), str(other)]) == 2
    differing = "different settings (architecture, batch_size, epochs, input_spec, mixup, weight_decay"
    assert differing in capsys.readouterr().err
    # Its temperature was fitted on its network after its epochs: a refit trains the same.
    assert main([*argv, "--temperature-from", str(other)]) == 2
    assert "epochs 1 (the run: 3)" in capsys.readouterr().err
    # Its temperature was fitted on its own data folders' cells: a refit learns from the same.
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({**json.loads(held_out.read_text()), "dataset_path": str(tmp_path)}))
    assert main([*argv, "--temperature-from", str(elsewhere)]) == 2
    assert f"learns from the data folders its held-out run did ({tmp_path})" in capsys.readouterr().err
    elsewhere.write_text(json.dumps({**json.loads(held_out.read_text()), "dataset_path": str(tiny_data)}))
    assert main([*argv, "--temperature-from", str(elsewhere)]) == 0


def test_pooled_temperature_rebuilds_each_run_split_and_fits_one_temperature(tiny_data, tmp_path):
    from classifier.training import pooled_temperature

    runs = []
    for split_seed in (3, 4):
        result = train_classifier(
            config(tiny_data, tmp_path, architecture="paper", validation_seed=split_seed,
                   evaluate_test=False))
        runs.append((result, result.save(tmp_path / f"run{split_seed}")))

    # One run: its own split rebuilt gives back the temperature training fitted on it.
    alone, source = pooled_temperature([runs[0][1]], tiny_data, cache_dir=tmp_path / "c")
    assert alone == pytest.approx(runs[0][0].temperature, rel=1e-4)
    assert "split seeds 3;" in source

    pooled, source = pooled_temperature([path for _, path in runs], tiny_data, cache_dir=tmp_path / "c")
    count = sum(result.metadata["validation_count"] for result, _ in runs)
    assert f"split seeds 3, 4; {count} images" in source
    # The NLL is convex in 1 / T, so the pooled minimum lies between the two runs' own.
    low, high = sorted(result.temperature for result, _ in runs)
    assert low * (1 - 1e-3) <= pooled <= high * (1 + 1e-3)

    other = tmp_path / "other"
    write_split(other, "TRAIN", 20, start=100)
    with pytest.raises(ValueError, match="not the data it was trained on"):
        pooled_temperature([runs[0][1]], other, cache_dir=tmp_path / "c")
    refit = train_classifier(config(tiny_data, tmp_path, architecture="paper", validation_fraction=0,
                                    temperature=0.9, evaluate_test=False))
    with pytest.raises(ValueError, match="without a validation split"):
        pooled_temperature([refit.save(tmp_path / "refit")], tiny_data, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("out", ["a-file", "a-file/model"])
def test_command_line_refuses_an_output_it_cannot_write_before_training(tiny_data, tmp_path, capsys, out):
    from classifier.train_cli import main

    (tmp_path / "a-file").write_text("kept")
    argv = ["--data", str(tiny_data), "--epochs", "1", "--quiet", "--no-test", "--cache-dir", str(tmp_path),
            "--out", str(tmp_path / out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "epoch 1/1" not in captured.out  # refused before an hour of training, not after it
    assert captured.err.count("\n") == 1 and "is a file, not a folder" in captured.err
    assert (tmp_path / "a-file").read_text() == "kept"


def test_command_line_names_what_its_run_leaves_out_and_replaces(tmp_path, capsys):
    # A misnamed folder (MONO/) was trained on nothing without a word, where the site's
    # retraining says so on the version's page; a model folder given as --out was replaced unsaid.
    from PIL import Image

    from classifier.train_cli import main

    train = tmp_path / "data" / "TRAIN"
    for folder, count in (("NEUTROPHIL", 1), ("MONO", 3)):
        (train / folder).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (64, 64), (200, 150, 190)).save(train / folder / f"{index}.jpg")
    (tmp_path / "kept" / "metadata.json").parent.mkdir()
    (tmp_path / "kept" / "metadata.json").write_text("{}")
    argv = ["--data", str(tmp_path / "data"), "--epochs", "1", "--quiet", "--cache-dir", str(tmp_path / "c"),
            "--out", str(tmp_path / "kept")]
    assert main(argv) == 2  # one photograph of one class: refused before training
    captured = capsys.readouterr()
    assert (f"note: {train} also holds MONO/ (3 images; rename it MONOCYTE/ to count its cells as that "
            "type): not types of the 4class task, left out of this training.") in captured.out
    # Replacing a model folder is a refit in place (MODEL_CARD.md): allowed, and said before the hour.
    replaced = f"note: --out {tmp_path / 'kept'} holds a model folder: the network trained replaces it"
    assert replaced in captured.out
    assert captured.err.startswith("error: ")


def test_test_files_that_are_copies_of_training_files_are_measured_apart(tiny_data, tmp_path):
    """A TEST folder holding byte-for-byte copies of TRAIN files (a lab copying a few across while
    sorting) was scored as held out without a word: its figures counted cells the network was
    trained on. Such copies are now told apart as cells also photographed in TRAIN, as an
    originals.csv marks them, so the figures without them sit beside the whole folder's: the review
    flag's too, which were measured on the whole folder alone, copies included, and so quoted as a
    held-out flag rate on the adapted version's page."""
    import shutil

    for name in FOUR_CLASSES:
        train_file = sorted((tiny_data / "TRAIN" / name).iterdir())[0]
        shutil.copy(train_file, tiny_data / "TEST" / name / f"copy-of-{train_file.name}")
    result = train_classifier(config(tiny_data, tmp_path, architecture="paper", validation_fraction=0.0,
                                     temperature=1.0))
    test = result.metrics["TEST"]
    assert test["n"] == 12
    assert test["without_same_cell_in_train"]["n"] == 8
    whole, never_trained_on = test["review_flag"], test["without_same_cell_in_train"]["review_flag"]
    assert (whole["cells"], never_trained_on["cells"]) == (12, 8)
    assert never_trained_on["confidence_threshold"] == whole["confidence_threshold"]
    assert never_trained_on["ood_score"] == whole["ood_score"]
    assert never_trained_on["errors"] <= whole["errors"]
    # The flag's share on the eight, with the copies' four cells put back, is the whole folder's.
    flagged_copies = round(whole["flagged_share"] * 12 - never_trained_on["flagged_share"] * 8, 6)
    assert flagged_copies in {0, 1, 2, 3, 4}


def test_command_line_that_cannot_save_its_network_says_so_in_one_line(tiny_data, tmp_path, capsys):
    """A --out that refused the network once it was trained (a disk that filled during the run)
    ended the command with a traceback; here the folder's model.keras is a folder, which no file
    can replace."""
    from classifier.train_cli import main

    out = tmp_path / "run"
    (out / "model.keras").mkdir(parents=True)
    argv = ["--data", str(tiny_data), "--arch", "paper", "--epochs", "1", "--quiet", "--no-test",
            "--cache-dir", str(tmp_path / "c"), "--out", str(out)]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: the trained network could not be saved in --out {out} (")
    assert error.count("\n") == 1
    assert sorted(path.name for path in out.iterdir()) == ["model.keras"]  # no part left behind


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


@pytest.mark.parametrize("split", ["TEST", "TRAIN"])
def test_a_folder_none_of_whose_files_is_a_photograph_is_refused_before_the_first_epoch(
        tiny_data, tmp_path, split):
    """A TEST folder of files that are no photographs (git-lfs pointers, renamed HEIC files) failed a
    run only after its last epoch (an hour of training lost); a TRAIN folder of them after every file
    had been decoded, naming no folder ("some classes have no training images left: EOSINOPHIL:
    0, ..."). Each is refused before the first epoch, naming the folder."""
    for path in (tiny_data / split).rglob("*.jpeg"):
        path.write_bytes(LFS_POINTER)
    unreadable = f"none of the {24 if split == 'TRAIN' else 8} images in {tiny_data / split} could be read"
    epochs = []
    with pytest.raises(TrainingDataError, match=unreadable):
        train_classifier(config(tiny_data, tmp_path, architecture="paper"), on_epoch=epochs.append)
    assert epochs == []
    assert not (tmp_path / "c").exists()  # nothing was decoded
    if split == "TEST":
        # A run that measures no TEST does not refuse it.
        train_classifier(config(tiny_data, tmp_path, architecture="paper", evaluate_test=False))


def test_a_test_folder_whose_files_pass_the_header_check_but_do_not_decode_is_still_named(
        tiny_data, tmp_path):
    """Files whose header reads as a photograph but whose data do not decode (JPEGs cut off before
    their scan) are found only as they are decoded, after training: named all the same, not a
    tensor error."""
    for path in (tiny_data / "TEST").rglob("*.jpeg"):
        data = path.read_bytes()
        path.write_bytes(data[:data.index(b"\xff\xda")])
    unreadable = f"none of the 8 images in {tiny_data / 'TEST'} could be read"
    with pytest.raises(TrainingDataError, match=unreadable):
        train_classifier(config(tiny_data, tmp_path, architecture="paper"))
