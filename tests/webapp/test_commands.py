"""Management commands for model versions: models, activate_model, train, evaluate; and the
classifier benchmark of a stored version."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from tests.synthetic_cells import write_cell_folder
from webapp.models import ModelActivation, ModelVersion
from webapp.review_flag import review_threshold

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_version(status, task="4class", **fields):
    fields.setdefault("metrics", {"TEST": {"accuracy": 0.875, "confusion_matrix": [[1]], "per_class": {}}})
    return ModelVersion.objects.create(
        architecture="paper", task=task, status=status,
        model_sha256="" if status == "failed" else "ab" * 32, **fields
    )


def load_script(path):
    """A benchmark script of bench/, loaded as a module (bench/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"bench_script_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_models_lists_every_version_with_its_accuracy():
    assert "No model versions yet" in run("models")
    make_version("active")
    ModelVersion.objects.create(architecture="paper", task="4class", status="failed",
                                failure_reason="no images")
    # Trained on two folders, as the bundled network: each folder's TEST is kept apart, and the
    # list showed its pooled validation figure, or "-" for an adapted version without one.
    table = {"accuracy": 0.955, "confusion_matrix": [[1]], "per_class": {}}
    make_version("ready", task="8class", metrics={
        "sources": {"pbc": {"order": 1, "TEST": dict(table)},
                    "blood-cell-images": {"order": 0, "TEST": dict(table, accuracy=0.881)}},
        "validation": dict(table, accuracy=0.9)})
    listing = run("models")
    lines = listing.splitlines()
    assert lines[0].split() == ["id", "status", "architecture", "task", "accuracy", "created", "cells",
                                "measured", "on"]
    assert "active" in lines[1] and "0.8750" in lines[1] and lines[1].rstrip().endswith(" 0  TEST")
    assert "failed" in lines[2] and " - " in lines[2]
    # The first folder's TEST headlines; the other folder's follows it, figure and all.
    assert "0.8810" in lines[3] and lines[3].endswith("blood-cell-images TEST; pbc TEST 0.9550")


@pytest.mark.django_db
def test_models_gives_no_figure_for_a_test_of_copies_of_train_alone():
    # The own-data audit's `--data dup --data clean4`, dup's TEST all copies of its TRAIN photographs:
    # the list printed "0.2500 ... dup TEST", the figure on those copies, as the held-out accuracy.
    table = {"n": 20, "accuracy": 0.25, "confusion_matrix": [[5]], "per_class": {}}
    make_version("ready", dataset_path="/data/dup:/data/clean4", metrics={
        "sources": {"dup": {"order": 0, "TEST": dict(table, without_same_cell_in_train=dict(table, n=0))},
                    "clean4": {"order": 1, "TEST": dict(table, accuracy=0.9)}},
        "validation": dict(table, accuracy=0.8)})
    line = run("models").splitlines()[1]
    assert "0.9000" in line and "0.2500" not in line
    assert line.endswith(
        "clean4 TEST; dup/TEST: no held-out figure, all 20 are of cells also photographed in TRAIN")


@pytest.mark.django_db
def test_models_gives_each_versions_time_in_the_sites_time_zone(settings):
    # As the model pages and every other page do: it printed UTC, an hour off in Madrid.
    settings.TIME_ZONE = "Europe/Madrid"
    version = make_version("active")
    ModelVersion.objects.filter(pk=version.pk).update(
        created_at=datetime(2026, 1, 2, 23, 30, tzinfo=UTC))
    assert "2026-01-03 00:30" in run("models").splitlines()[1]


@pytest.mark.django_db
def test_activate_model_switches_and_explains_refusals():
    old = make_version("active")
    new = make_version("ready")
    assert f"v{new.pk} is now the active model" in run("activate_model", str(new.pk))
    assert ModelVersion.objects.get(status="active") == new
    assert ModelActivation.objects.get(version=new).previous_version == old
    assert "already" in run("activate_model", str(new.pk))

    failed = make_version("failed")
    with pytest.raises(CommandError, match="only a ready version can serve"):
        run("activate_model", str(failed.pk))
    with pytest.raises(CommandError, match="no model version 9999"):
        run("activate_model", "9999")
    assert ModelVersion.objects.get(status="active") == new


@pytest.mark.django_db
def test_activate_model_refuses_a_version_no_better_than_guessing_unless_forced():
    # The model audit: the site warns before and after activating such a version; the command said
    # only "v4 is now the active model." Then it activated it, and warned after: a script has
    # nobody to read the warning before the lab is served its calls.
    active = make_version("active")
    table = {"accuracy": 0.25, "balanced_accuracy": 0.25, "confusion_matrix": [[1]],
             "per_class": {name: {"recall": 0.25, "support": 10} for name in ("E", "L", "M", "N")}}
    guessing = make_version("ready", class_names=["E", "L", "M", "N"], metrics={"TEST": table})
    with pytest.raises(CommandError) as refused:
        run("activate_model", str(guessing.pk))
    assert str(refused.value) == (
        f"v{guessing.pk} was not activated: v{guessing.pk} called 25% of the TEST cells right, no better "
        "than guessing among its 4 types (25%): it would serve calls a lab cannot use. Activate it anyway "
        f"with `manage.py activate_model {guessing.pk} --force`.")
    assert ModelVersion.objects.get(status="active") == active

    out, err = StringIO(), StringIO()
    call_command("activate_model", str(guessing.pk), "--force", stdout=out, stderr=err)
    assert f"v{guessing.pk} is now the active model" in out.getvalue()
    assert (f"Warning: v{guessing.pk} called 25% of the TEST cells right, no better than guessing among "
            "its 4 types (25%)") in err.getvalue()
    assert "Activate another version to stop it." in err.getvalue()


@pytest.mark.django_db
def test_train_with_a_bad_path_is_refused_before_a_version_is_stored(tmp_path):
    active = make_version("active")
    missing = tmp_path / "not-there"
    with pytest.raises(CommandError, match=f"Training data folder {missing} does not exist"):
        run("train", "--data", str(missing), "--arch", "paper", "--epochs", "1", "--activate")
    assert list(ModelVersion.objects.all()) == [active], "no failed version left on the site"


@pytest.mark.django_db
def test_train_on_one_folder_given_twice_is_refused_before_a_version_is_stored(tmp_path):
    # It trained the folder as two sources, each image twice, one copy's training images able to sit
    # in the other's validation split.
    data = write_cell_folder(tmp_path / "cells", per_class=1, test_per_class=0)
    with pytest.raises(CommandError) as refused:
        run("train", "--data", str(data), "--data", f"{data}/", "--arch", "paper", "--epochs", "1")
    assert str(refused.value) == (f"The data folder {data} is given twice (again as {data}/): give each "
                                  "folder once (--data).")
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_train_with_a_source_weight_for_no_folder_is_refused_before_a_version_is_stored(tmp_path):
    data = write_cell_folder(tmp_path / "cells", per_class=1, test_per_class=0)
    with pytest.raises(CommandError) as refused:
        run("train", "--data", str(data), "--arch", "paper", "--epochs", "1",
            "--source-weights", '{"cels": 2}')
    assert str(refused.value) == ("The source weights name 'cels', which is no data folder of this run: its "
                                  "folders are named 'cells' (--source-weights; --data).")
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_listing_read_in_part_ends_without_a_traceback():
    # The own-data audit: `manage.py models | head` printed BrokenPipeError's traceback.
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the subprocess is pointed at the SQLite test database file")
    # More lines than a pipe holds (64 KiB), so that the listing is still writing when head stops.
    ModelVersion.objects.bulk_create(
        ModelVersion(architecture="paper", task="4class", status="failed", class_names=["A"], seed=number)
        for number in range(2000))
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{connection.settings_dict['NAME']}")
    completed = subprocess.run(f"{sys.executable} manage.py models | head -n 2", shell=True, cwd=REPO_ROOT,
                               env=env, capture_output=True, text=True, timeout=120)
    assert len(completed.stdout.splitlines()) == 2 and completed.stdout.startswith("  id  status")
    assert "Traceback" not in completed.stderr and "BrokenPipe" not in completed.stderr


@pytest.mark.django_db(transaction=True)
def test_train_with_a_bad_path_prints_one_line_and_no_traceback(tmp_path):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the subprocess is pointed at the SQLite test database file")
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{connection.settings_dict['NAME']}")
    completed = subprocess.run(
        [sys.executable, "manage.py", "train", "--data", str(tmp_path / "nope"), "--arch", "paper",
         "--epochs", "1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr + completed.stdout
    assert completed.stderr.strip() == (
        f"CommandError: Training data folder {tmp_path / 'nope'} does not exist (--data).")
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_train_activates_a_version_the_site_would_warn_of_only_when_forced(tmp_path, monkeypatch):
    # `train --activate` served whatever it trained, unwarned: here a refit on a folder without
    # TEST, measured on no cell it did not learn from.
    import shutil

    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    shutil.copytree(write_cell_folder(tmp_path / "cells", per_class=4, test_per_class=1) / "TRAIN",
                    tmp_path / "flat")
    active = make_version("active")
    unmeasured = ["train", "--data", str(tmp_path / "flat"), "--arch", "paper", "--task", "4class",
                  "--epochs", "1", "--batch-size", "8", "--validation-fraction", "0", "--temperature", "1"]
    with pytest.raises(CommandError, match="--force .* goes with --activate"):
        run(*unmeasured, "--force")
    assert not ModelVersion.objects.exclude(pk=active.pk).exists()

    with pytest.raises(CommandError) as refused:
        run(*unmeasured, "--activate")
    trained = ModelVersion.objects.exclude(pk=active.pk).get()
    assert str(refused.value).startswith(
        f"v{trained.pk} was not activated: v{trained.pk} was measured on no cells it did not learn from")
    assert str(refused.value).endswith(
        f"Activate it anyway with `manage.py activate_model {trained.pk} --force`.")
    assert trained.status == "ready" and ModelVersion.objects.get(status="active") == active


@pytest.mark.django_db
def test_train_one_epoch_on_a_tiny_set_stores_a_network_that_loads_back(tmp_path, monkeypatch, capsys):
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=4, test_per_class=2)

    # One epoch on four cells a type learns nothing a lab can use: activated only when forced. The
    # folder given from where the command runs is recorded from / (the own-data audit: stored as
    # typed, it was "not on this machine" to a command run elsewhere, and to the worker).
    monkeypatch.chdir(tmp_path)
    output, err = StringIO(), StringIO()
    call_command("train", "--data", "cells/", "--arch", "paper", "--task", "4class", "--epochs", "1",
                 "--batch-size", "8", "--seed", "3", "--activate", "--force", stdout=output, stderr=err)
    output = output.getvalue()

    version = ModelVersion.objects.get()
    assert version.status == "active" and version.source == "command" and version.dataset_path == str(data)
    assert version.seed == 3 and version.hyperparameters["epochs"] == 1
    assert len(version.history) == 1 and set(version.class_counts) == set(version.class_names)
    assert version.progress["state"] == "done" and version.progress["epoch"] == 1
    assert "confusion matrix" in output and "is now the active model" in output
    assert "TEST" in version.metrics and ModelActivation.objects.filter(version=version).exists()

    from classifier.inference import CellClassifier
    from webapp.services.model_registry import classifier_metadata

    loaded = CellClassifier.from_bytes(bytes(version.model_bytes), classifier_metadata(version))
    window = np.full((240, 320, 3), 200, dtype=np.uint8)
    probabilities = loaded.predict([window])
    assert probabilities.shape == (1, 4) and abs(probabilities.sum() - 1) < 1e-4

    report = run("evaluate", "--version", str(version.pk), "--data", str(data), "--split", "TEST")
    assert "n=8" in report and "confusion matrix" in report and "binary grouping" in report
    # Each --data is evaluated (only the last was), and a folder of class folders alone is said to be
    # all its images, not "TEST", and not held out where the version trained on it (the model audit).
    import shutil

    flat = tmp_path / "flat"
    shutil.copytree(data / "TRAIN", flat)
    report = run("evaluate", "--version", str(version.pk), "--data", str(data), "--data", str(flat))
    assert f"on {data} TEST" in report and f"on {flat}, all its images (it has no TEST folder)" in report
    ModelVersion.objects.filter(pk=version.pk).update(dataset_path=str(flat))
    report = run("evaluate", "--version", str(version.pk), "--data", str(flat))
    assert f"v{version.pk} trained on this folder, so these figures are not held out" in report
    # A lab's own names: a plural is read as the type; an abbreviation is left out, and said so.
    (flat / "LYMPHOCYTE").rename(flat / "lymphocytes")
    (flat / "MONOCYTE").rename(flat / "mono")
    report = run("evaluate", "--version", str(version.pk), "--data", str(flat))
    assert "n=12" in report and "LYMPHOCYTE" in report
    assert (f"Note: {flat} also holds mono/ (4 images; rename it MONOCYTE/ to count its cells as that "
            "type): not types of the 4class task, left out of this evaluation.") in report

    capsys.readouterr()
    bench = load_script(Path(REPO_ROOT) / "bench" / "classify.py")
    # A source's own validation temperature, as a run on several sources stores it.
    own = {"calibration": {"sources": {data.name: {"temperature": 1.5}}}}
    ModelVersion.objects.filter(pk=version.pk).update(metrics={**version.metrics, **own})
    # What `make bench-classify` runs, on the active version.
    assert bench.main(["--model-version", "active", "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert f"Benchmarking v{version.pk} (paper/4class)" in printed and "TEST (n=8): accuracy" in printed
    assert "with the temperature fitted on this source's validation cells alone (1.500)" in printed


@pytest.mark.django_db
def test_train_prints_each_folders_held_out_figure_and_says_which_has_none(tmp_path, monkeypatch):
    # `--data dup --data clean4`, dup's TEST all copies of its TRAIN: the terminal printed the
    # validation split alone, neither clean4's TEST figure nor why dup's TEST gave none.
    import shutil

    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    dup = write_cell_folder(tmp_path / "dup", per_class=4, test_per_class=0, seed=1)
    for train_file in (dup / "TRAIN").rglob("*.jpeg"):
        shutil.copy(train_file, dup / "TEST" / train_file.parent.name / f"copy-of-{train_file.name}")
    clean = write_cell_folder(tmp_path / "clean4", per_class=4, test_per_class=2, seed=2)
    output = run("train", "--data", str(dup), "--data", str(clean), "--arch", "paper", "--task", "4class",
                 "--epochs", "1", "--batch-size", "8")
    version = ModelVersion.objects.get()
    assert "dup/TEST: no held-out figure, all 16 are of cells also photographed in TRAIN." in output
    assert f"v{version.pk} on clean4/TEST (held out)\nn=8  accuracy=" in output
    assert "on dup/TEST (held out)" not in output and "validation split" not in output


@pytest.mark.django_db
def test_train_beside_a_site_training_says_so(tmp_path, monkeypatch):
    # The model audit started one from the command line while the site trained, unawares: on two
    # cores both then take twice as long. Allowed, and now said.
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=4, test_per_class=2)
    site = ModelVersion.objects.create(architecture="paper", task="4class", status="training", source="site")
    err = StringIO()
    call_command("train", "--data", str(data), "--arch", "paper", "--task", "4class", "--epochs", "1",
                 "--batch-size", "8", stdout=StringIO(), stderr=err)
    assert (f"Note: v{site.pk} is training too (retrained from the site); both share this machine's cores, "
            "and each will take about twice as long.") in err.getvalue()
    assert ModelVersion.objects.filter(status="ready").count() == 1


@pytest.mark.django_db
def test_train_names_the_files_it_skipped_and_why(tmp_path, monkeypatch):
    """The terminal said only TEST's count of files it could not read, never TRAIN's, and named
    none: a lab with 2,000 photographs could not find them. A greyscale one, which upload refuses,
    was learnt from."""
    from PIL import Image

    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=4, test_per_class=2)
    neutrophils = data / "TRAIN" / "NEUTROPHIL"
    (neutrophils / "broken.jpeg").write_bytes(b"\xff\xd8 not a photograph")
    Image.open(next(neutrophils.glob("*_0.jpeg"))).convert("L").save(neutrophils / "grey.png")
    (data / "TEST" / "MONOCYTE" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    out = StringIO()
    call_command("train", "--data", str(data), "--arch", "paper", "--task", "4class", "--epochs", "1",
                 "--batch-size", "8", stdout=out, stderr=StringIO())
    printed = out.getvalue()
    assert (f"2 files skipped, left out of training and validation:\n"
            f"  {neutrophils / 'broken.jpeg'}: not an image, or damaged\n"
            f"  {neutrophils / 'grey.png'}: greyscale: the network learns and calls cells by their stain "
            "colours\n") in printed
    assert (f"1 file skipped, left out of these figures:\n"
            f"  {data / 'TEST' / 'MONOCYTE' / 'broken.png'}: not an image, or damaged") in printed
    version = ModelVersion.objects.get(status="ready")
    assert version.metrics["skipped_files"] == 2 and len(version.metrics["skipped_named"]) == 2


@pytest.mark.django_db
def test_train_refits_on_every_group_with_the_temperature_of_a_held_out_version(tmp_path, monkeypatch):
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=4, test_per_class=2)
    tiny = ("--data", str(data), "--arch", "paper", "--task", "4class", "--epochs", "1", "--batch-size", "8")
    run("train", *tiny, "--seed", "3")
    held_out = ModelVersion.objects.get()
    ModelVersion.objects.filter(pk=held_out.pk).update(
        temperature=1.37, metrics={**held_out.metrics, "review": {"confidence_threshold": 0.83}})

    with pytest.raises(CommandError, match="--temperature-from"):
        run("train", *tiny, "--validation-fraction", "0")
    with pytest.raises(CommandError, match="no model version v9999"):
        run("train", *tiny, "--validation-fraction", "0", "--temperature-from", "9999")
    with pytest.raises(CommandError, match="no calibration temperature"):
        run("train", *tiny, "--validation-fraction", "0", "--temperature-from", str(tmp_path / "none"))
    # Its temperature and threshold were fitted on its own data's cells, not another folder's.
    other = write_cell_folder(tmp_path / "other-lab", per_class=4, test_per_class=2)
    with pytest.raises(CommandError, match=re.escape(
            f"Refused: a refit learns from the data folders its held-out run did ({data}), or the run's "
            f"temperature and review threshold do not fit it: given {other} (--data).")):
        run("train", "--data", str(other), *tiny[2:], "--validation-fraction", "0",
            "--temperature-from", f"v{held_out.pk}")
    assert ModelVersion.objects.count() == 1, "a refused refit stores no version"

    # Made under other defaults than today's: the refit repeats its inputs and augmentation.
    ModelVersion.objects.filter(pk=held_out.pk).update(
        input_spec={"height": 60, "width": 80, "mode": "field"},
        hyperparameters={**held_out.hyperparameters, "zoom": 0.05, "mixup": 0.4})
    run("train", *tiny, "--validation-fraction", "0", "--temperature-from", f"v{held_out.pk}",
        "--mixup", "0.2")

    refit = ModelVersion.objects.exclude(pk=held_out.pk).get()
    assert refit.status == "ready" and refit.temperature == pytest.approx(1.37)
    assert refit.hyperparameters["validation_fraction"] == 0 and refit.hyperparameters["mixup"] == 0.2
    assert refit.hyperparameters["zoom"] == 0.05 and refit.hyperparameters["batch_size"] == 8
    assert refit.input_spec == {"height": 60, "width": 80, "mode": "field"}
    assert f"v{held_out.pk}" in refit.metrics["refit"]["temperature_source"]
    assert review_threshold(refit) == pytest.approx(0.83), "the held-out run's review threshold comes too"
    assert f"v{held_out.pk}" in refit.metrics["review"]["refit_from"]
    assert refit.history[0]["val_loss"] is None and "TEST" in refit.metrics
    assert sum(refit.class_counts.values()) == 16, "the refit trains on every TRAIN image"
    with pytest.raises(CommandError, match="without a validation split"):
        run("train", *tiny, "--validation-fraction", "0", "--temperature-from", f"v{refit.pk}")
    # Its temperature was fitted on that network after that many epochs: another is refused.
    for changed, named in ((("--epochs", "2"), "epochs 2 .the run: 1."),
                           (("--task", "binary"), "task binary .the run: 4class.")):
        with pytest.raises(CommandError, match=named):
            run("train", "--data", str(data), *changed, "--validation-fraction", "0",
                "--temperature-from", f"v{held_out.pk}")
    # Not given, they are the run's, whatever the active version is.
    make_version("active", task="binary")
    output = run("train", "--data", str(data), "--batch-size", "8", "--validation-fraction", "0",
                 "--temperature-from", f"v{held_out.pk}")
    repeated = ModelVersion.objects.order_by("-pk").first()
    trained = (repeated.architecture, repeated.task, repeated.hyperparameters["epochs"])
    assert trained == ("paper", "4class", 1)
    assert "architecture paper" in output and "epochs 1" in output and "task 4class" in output

    # A held-out run kept as a folder (train_cli --out) is repeated the same way.
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "metadata.json").write_text(json.dumps({
        "temperature": 1.1, "input_spec": {"height": 60, "width": 80, "mode": "field"},
        "architecture": "paper", "task": "4class", "hyperparameters": {"zoom": 0.07, "epochs": 1}}))
    with pytest.raises(CommandError, match="architecture leukonet .the run: paper."):
        run("train", *tiny, "--arch", "leukonet", "--validation-fraction", "0",
            "--temperature-from", str(run_folder))
    run("train", *tiny, "--validation-fraction", "0", "--temperature-from", str(run_folder))
    from_folder = ModelVersion.objects.order_by("-pk").first()
    assert from_folder.temperature == pytest.approx(1.1) and from_folder.hyperparameters["zoom"] == 0.07
    assert from_folder.input_spec == {"height": 60, "width": 80, "mode": "field"}
    assert "review" not in from_folder.metrics, "a run that fitted no threshold lends none"


@pytest.mark.django_db
def test_train_without_arch_or_task_trains_the_active_versions_network(tmp_path, monkeypatch):
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=4, test_per_class=1)
    active = make_version("active", task="binary")
    tiny = ("--data", str(data), "--epochs", "1", "--batch-size", "8")

    output = run("train", *tiny)
    trained = ModelVersion.objects.exclude(pk=active.pk).get()
    assert (trained.architecture, trained.task) == ("paper", "binary") and trained.status == "ready"
    assert f"active version's network: paper / binary (v{active.pk})" in output

    ModelVersion.objects.filter(pk=trained.pk).delete()
    run("train", *tiny, "--arch", "paper")
    assert ModelVersion.objects.exclude(pk=active.pk).get().task == "4class", (
        "an architecture given takes the recipe's task, not the active version's"
    )


@pytest.mark.django_db
def test_ctrl_c_during_training_marks_the_version_cancelled(monkeypatch, tmp_path):
    import classifier.training

    def interrupted(config, on_epoch=None, should_stop=None, progress_bar=False, on_stage=None):
        assert progress_bar  # the terminal gets Keras' live bar
        raise KeyboardInterrupt

    monkeypatch.setattr(classifier.training, "train_classifier", interrupted)
    # A folder-per-class layout with two photographs of each type, which train checks first.
    data = write_cell_folder(tmp_path / "cells", per_class=2, test_per_class=0) / "TRAIN"
    with pytest.raises(CommandError, match="marked cancelled") as raised:
        run("train", "--data", str(data), "--arch", "paper", "--epochs", "1")
    assert raised.value.returncode == 130
    version = ModelVersion.objects.get()
    assert version.status == "cancelled" and "Ctrl-C" in version.failure_reason


@pytest.mark.django_db
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_a_signal_to_end_the_process_during_training_marks_the_version_cancelled(monkeypatch, tmp_path,
                                                                                  signal_name):
    """`kill PID` (or a closed terminal) ended the process on the spot: its version stayed "training",
    shown as such on the site, until the reconciler found the process gone about a minute later,
    and the terminal said nothing."""
    import os
    import signal
    import time

    import classifier.training

    sent = signal.Signals[signal_name]

    def killed(config, on_epoch=None, should_stop=None, progress_bar=False, on_stage=None):
        os.kill(os.getpid(), sent)
        time.sleep(5)  # the handler runs before this returns
        raise AssertionError("the signal did not stop the training")

    monkeypatch.setattr(classifier.training, "train_classifier", killed)
    data = write_cell_folder(tmp_path / "cells", per_class=2, test_per_class=0) / "TRAIN"

    def outside_training(signum, frame):  # stands in for the default, which would end the test run
        raise RuntimeError(f"{signal_name} reached the process's own handler")

    before = signal.signal(sent, outside_training)
    try:
        with pytest.raises(CommandError, match=rf"^{signal_name}: v\d+ is marked cancelled\.$") as raised:
            run("train", "--data", str(data), "--arch", "paper", "--epochs", "1")
        assert signal.getsignal(sent) is outside_training  # the process's own, once training is over
    finally:
        signal.signal(sent, before)
    assert raised.value.returncode == 128 + sent
    version = ModelVersion.objects.get()
    assert version.status == "cancelled"
    assert version.failure_reason == f"Stopped by {signal_name}: the process was asked to end."


@pytest.mark.django_db
def test_the_classifier_benchmark_of_a_stored_version_says_why_it_cannot_run(tmp_path, capsys):
    bench = load_script(Path(REPO_ROOT) / "bench" / "classify.py")
    assert bench.main(["--model-version", "active", "--data", str(tmp_path)]) == 2
    assert "No model version is active" in capsys.readouterr().err
    failed = make_version("failed")
    assert bench.main(["--model-version", str(failed.pk), "--data", str(tmp_path)]) == 2
    assert "holds no trained network" in capsys.readouterr().err


def test_the_classifier_benchmark_reads_every_blood_cell_images_figure_over_the_held_types():
    """An eight-type network on a four-type source: TEST without same-cell copies and the worst
    photographs are read as TEST is, over the four, not charged for calls of a type it lacks."""
    bench = load_script(Path(REPO_ROOT) / "bench" / "classify.py")
    names = ["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL", "PLATELET"]
    # Both cells are neutrophils; PLATELET is the first call, NEUTROPHIL the first of the held.
    probabilities = np.array([[0.1, 0.1, 0.3, 0.5], [0.1, 0.1, 0.2, 0.6]])
    y = np.array([2, 2])
    picked, picked_y, held = bench._over_held(probabilities, y, names, names[:3])
    assert held == names[:3] and list(picked.argmax(1)) == list(picked_y) == [2, 2]
    np.testing.assert_allclose(picked.sum(axis=1), 1.0)
    same = bench._over_held(probabilities, y, names, names)
    assert same[0] is probabilities and same[2] == names


@pytest.mark.django_db
def test_a_bundled_version_takes_the_records_its_folder_gains_and_a_trained_one_keeps_its_own(tmp_path):
    from classifier.model_folder import write_model_folder
    from webapp.services.model_versions import register_model_directory

    metadata = {"architecture": "leukonet", "task": "binary", "class_names": ["MONONUCLEAR", "POLYNUCLEAR"],
                "input_spec": {"height": 96, "width": 96, "mode": "field"}, "metrics": {"temperature": 1.2}}
    folder = write_model_folder(tmp_path / "bundled", b"the same network", metadata)
    version, created = register_model_directory(folder)
    assert created and version.metrics == {"temperature": 1.2}
    # A newer release fits the same network's review threshold beside it, and names its data's
    # files another way.
    review = {"confidence_threshold": 0.86, "budget": 0.2}
    newer = {**metadata, "metrics": {"temperature": 1.2, "review": review}, "dataset_fingerprint": "f" * 64}
    write_model_folder(folder, b"the same network", newer)
    again, created = register_model_directory(folder)
    assert not created and again.pk == version.pk
    stored = ModelVersion.objects.get(pk=version.pk)
    assert stored.metrics["review"] == review and stored.dataset_fingerprint == "f" * 64

    trained = write_model_folder(tmp_path / "trained", b"a lab's network", metadata)
    lab_version, _ = register_model_directory(trained, source=ModelVersion.Source.COMMAND)
    write_model_folder(trained, b"a lab's network", {**metadata, "metrics": {"rewritten": True}})
    register_model_directory(trained, source=ModelVersion.Source.COMMAND)
    assert ModelVersion.objects.get(pk=lab_version.pk).metrics == {"temperature": 1.2}


@pytest.mark.django_db
def test_evaluate_checks_every_folder_before_it_loads_the_network(tmp_path, monkeypatch):
    """Loading the network starts TensorFlow, whose start-up lines came before the one-line refusal of
    a mistyped folder; and a second --data that is not there was found only after the first's
    figures."""
    import webapp.management.commands.evaluate as evaluate

    version = ModelVersion.objects.create(architecture="paper", task="4class", status="ready",
                                          model_sha256="0" * 64)
    data = write_cell_folder(tmp_path / "cells", per_class=1, test_per_class=1)

    def loaded(_):
        raise AssertionError("the network was loaded before the folders were checked")

    monkeypatch.setattr(evaluate, "load_classifier", loaded)
    cases = [
        ((str(tmp_path / "not-there"),), "^data folder .*not-there does not exist"),
        ((str(data), str(tmp_path / "not-there")), "^data folder .*not-there does not exist"),
        ((str(data),), "has no VALIDATION folder", "VALIDATION"),
        ((str(data / "TEST" / "NEUTROPHIL"),), "is not a folder-per-class layout"),
    ]
    for folders, expected, *split in cases:
        given = [argument for folder in folders for argument in ("--data", folder)]
        with pytest.raises(CommandError, match=expected):
            run("evaluate", "--version", str(version.pk), *given, *(["--split", *split] if split else []))


@pytest.mark.django_db
def test_evaluate_without_any_data_folder_says_so(settings):
    """With LEUKOSCOPE_TRAINING_DATA set empty and no --data, evaluate loaded the network, measured
    nothing and ended with success, printing not a line."""
    version = ModelVersion.objects.create(architecture="paper", task="4class", status="ready",
                                          model_sha256="0" * 64)
    settings.TRAINING_DATA_DIRS = []
    with pytest.raises(CommandError, match=r"^No data folder to evaluate on: give --data"):
        run("evaluate", "--version", str(version.pk))


@pytest.mark.django_db
def test_evaluate_version_0_is_no_version_not_the_active_one():
    """--version 0 evaluated the active version, as if no version had been given."""
    make_version("active")
    with pytest.raises(CommandError, match="There is no model version 0"):
        run("evaluate", "--version", "0", "--data", "/nowhere")


@pytest.mark.django_db
def test_ensure_default_model_with_a_damaged_bundled_folder_says_which_in_one_line(tmp_path, monkeypatch):
    """A release copied without one network's archive whole (a git-lfs pointer, an interrupted
    copy) stopped `ensure_default_model`, which the start-up runs before anything, with a traceback."""
    from classifier.model_folder import MODEL_FILE, write_model_folder
    from webapp.services import model_versions

    folder = write_model_folder(tmp_path / "leukonet-4class", b"network", {"task": "4class"})
    (folder / MODEL_FILE).write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    monkeypatch.setattr(model_versions, "bundled_model_folders", lambda: [folder])
    with pytest.raises(CommandError, match=r"^The bundled network .*leukonet-4class cannot be registered: .*"
                                           r"does not match the SHA-256") as refused:
        run("ensure_default_model")
    assert "\n" not in str(refused.value)
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_train_whose_version_is_cancelled_and_deleted_on_the_site_meanwhile_says_so(tmp_path, monkeypatch):
    """The site may cancel a training the terminal runs, and then delete it (a cancelled version
    can go): the run stopped at its next check, and the command ended with ModelVersion.DoesNotExist
    and a traceback."""
    import classifier.dataset
    import classifier.training
    from webapp.services.model_versions import delete_unused_version
    from webapp.services.training import cancel_training

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=2, test_per_class=1)
    real = classifier.training.train_classifier

    def cancelled_and_deleted_on_the_site(config, **kwargs):
        version = ModelVersion.objects.get()
        cancel_training(version)
        delete_unused_version(version)
        return real(config, **kwargs)

    monkeypatch.setattr(classifier.training, "train_classifier", cancelled_and_deleted_on_the_site)
    with pytest.raises(CommandError, match=r"^v\d+ was deleted while it trained: nothing of it was kept\.$"):
        run("train", "--data", str(data), "--arch", "paper", "--task", "4class", "--epochs", "1")
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_activations_at_once_swap_in_turn_without_a_database_error():
    """Two administrators activating two versions at once: on PostgreSQL the second waited for the
    first's lock on the active row, then found no active version (the first had just made it ready)
    and made its own active beside the first's: the one-active constraint refused it, a 500 on the
    site and an IntegrityError traceback from activate_model."""
    import threading

    from django.db import connection, transaction

    from tests.webapp.concurrent_requests import start_as_another_request
    from webapp.services.model_versions import activate_version

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's: SQLite serialises the two transactions whole")
    serving = make_version("active")
    first_choice, second_choice = make_version("ready"), make_version("ready")
    holding, errors = threading.Event(), []

    def first_admin():  # activates, and holds its transaction open while the second one asks
        with transaction.atomic():
            activate_version(first_choice)
            holding.set()
            threading.Event().wait(1)

    def second_admin():
        try:
            activate_version(second_choice)
        except Exception as exc:  # noqa: BLE001 - what the site would have answered 500 with
            errors.append(exc)

    first = start_as_another_request(first_admin)
    assert holding.wait(10)
    second = start_as_another_request(second_admin)
    first.join(10)
    second.join(10)
    assert errors == []
    active = ModelVersion.objects.filter(status="active").values_list("pk", flat=True)
    assert list(active) == [second_choice.pk]
    swap = ModelActivation.objects.get(version=second_choice)
    assert swap.previous_version_id == first_choice.pk
    assert ModelVersion.objects.get(pk=serving.pk).status == "ready"


@pytest.mark.django_db
def test_evaluate_and_the_benchmark_measure_test_copies_of_the_versions_training_files_apart(
        tmp_path, monkeypatch, capsys):
    """A run measures TEST files that are byte-for-byte copies of its TRAIN files apart from the
    held-out cells; `evaluate` and bench/classify.py measured them apart only where an originals.csv
    said so, scoring as held out cells the network learnt from."""
    import shutil

    import classifier.dataset
    from classifier.model_folder import BUNDLED_MODELS_DIR, is_model_folder, read_metadata, write_model_folder
    from webapp.services import model_registry
    from webapp.services.model_versions import register_model_directory

    bundled = BUNDLED_MODELS_DIR / "leukonet"
    if not is_model_folder(bundled):
        pytest.skip(f"bundled model {bundled} not present")
    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    model_registry._loaded.clear()  # versions' ids come round again after each test's rollback
    data = write_cell_folder(tmp_path / "cells", per_class=2, test_per_class=2)
    for name in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE"):
        train_file = sorted((data / "TRAIN" / name).iterdir())[0]
        shutil.copy(train_file, data / "TEST" / name / f"copy-of-{train_file.name}")
    version, _ = register_model_directory(bundled, dataset_path=str(data))

    report = run("evaluate", "--version", str(version.pk), "--data", str(data))
    assert "n=11" in report and "without images of cells also in TRAIN: n=8" in report

    bench = load_script(Path(REPO_ROOT) / "bench" / "classify.py")
    capsys.readouterr()
    assert bench.main(["--model-version", str(version.pk), "--data", str(data), "--no-speed"]) == 0
    printed = capsys.readouterr().out
    assert "TEST (n=11): accuracy" in printed and "TEST without same_cell_in_train (n=8): accuracy" in printed
    # A model folder names its data in its metadata, as the bundled ones do.
    folder = write_model_folder(tmp_path / "net", (bundled / "model.keras").read_bytes(),
                                {**read_metadata(bundled), "dataset_path": str(data)})
    assert bench.main(["--model-dir", str(folder), "--data", str(data), "--no-speed"]) == 0
    assert "TEST without same_cell_in_train (n=8): accuracy" in capsys.readouterr().out

    # Data folders not on this machine: said, not passed over in silence.
    ModelVersion.objects.filter(pk=version.pk).update(dataset_path=str(tmp_path / "moved"))
    report = run("evaluate", "--version", str(version.pk), "--data", str(data))
    assert (f"Note: v{version.pk} learnt from {tmp_path / 'moved'}, which is not on this machine: copies "
            "of its photographs are not told apart from the others.") in report
    assert "without images of cells also in TRAIN" not in report

    # A TEST of copies alone holds no held-out figure: said so, where it printed "accuracy=0.0000".
    for photograph in (data / "TEST").rglob("*.*"):
        if not photograph.name.startswith("copy-of-"):
            photograph.unlink()
    ModelVersion.objects.filter(pk=version.pk).update(dataset_path=str(data))
    report = run("evaluate", "--version", str(version.pk), "--data", str(data))
    assert "without images of cells also in TRAIN: none (all 3 are)" in report
    assert bench.main(["--model-version", str(version.pk), "--data", str(data), "--no-speed"]) == 0
    assert "TEST without same_cell_in_train: none; every TEST image is marked so" in capsys.readouterr().out
