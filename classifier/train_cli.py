"""Train a classifier without Django: ``python -m classifier.train_cli --data DIR --arch NAME
--task TASK --epochs N --out FOLDER`` writes FOLDER/model.keras + FOLDER/metadata.json."""

import argparse
import os
import sys
from pathlib import Path

from classifier.dataset import left_out_note, resolve_layout
from classifier.errors import TrainingDataError
from classifier.metrics import format_metrics, format_skipped
from classifier.runtimes import quiet_tensorflow_startup
from classifier.training import (
    TrainingConfig,
    kept_epoch_label,
    pooled_temperature,
    temperature_of_run,
    train_classifier,
)
from classifier.training.command_line import (
    add_recipe_arguments,
    recipe_given,
    repeated_line,
)
from classifier.training.data import absolute_folders
from classifier.training.recipe import HeldOutCalibration


def _figure(value):
    return "n/a" if value is None else f"{value:.4f}"


def build_parser():
    """The options: every recipe setting offered on the command line (classifier.training.recipe),
    and those of this run: its data, a held-out run to calibrate a refit with, and its output."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", required=True, action="append",
        help="a data folder (with TRAIN/, or CLASS/ dirs); give it again for each further source "
        "(one lab's photographs each), trained on together and measured apart",
    )
    add_recipe_arguments(parser)
    parser.add_argument(
        "--temperature-from",
        metavar="PATH",
        nargs="+",
        help="use the calibration temperature of a held-out run of the same recipe: its model "
        "folder, or its metadata.json; with several run folders (each its own validation split), "
        "one temperature fitted on their pooled validation predictions. The refit repeats the "
        "run's input spec and augmentation unless given here (not with --temperature)",
    )
    parser.add_argument("--no-test", action="store_true", help="skip TEST metrics")
    parser.add_argument(
        "--cache-dir", default=None, help="prepared-input cache (default: var/cache of the checkout)"
    )
    parser.add_argument("--out", help="folder for model.keras + metadata.json")
    parser.add_argument(
        "--mark-default",
        action="store_true",
        help="mark the saved folder as the bundled model a fresh install activates",
    )
    parser.add_argument("--quiet", action="store_true", help="no Keras progress bar")
    return parser


def _settings(args):
    """The recipe settings of the run: those given, and a held-out run's for a refit of it."""
    given = recipe_given(args)
    if args.temperature_from:
        if args.temperature is not None:
            raise ValueError("give --temperature or --temperature-from, not both")
        borrowed = _held_out_calibration(args)
        settings, repeated = borrowed.for_refit(given)
        borrowed.check_same_data(list(args.data))
        if repeated:
            print(repeated_line(repeated))
        return settings
    if args.temperature is not None:
        given["temperature_source"] = "given on the command line"
    return given


def main(argv=None):
    quiet_tensorflow_startup(os.environ)
    args = build_parser().parse_args(argv)
    args.data = absolute_folders(args.data)
    try:
        settings = _settings(args)
        _check_out(args.out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = TrainingConfig(
        data_dir=list(args.data), evaluate_test=not args.no_test, cache_dir=args.cache_dir, **settings
    )

    def report(row):
        validation = (
            ""
            if row["val_loss"] is None
            else f"val_loss={_figure(row['val_loss'])} val_acc={_figure(row['val_accuracy'])} "
        )
        print(
            f"epoch {row['epoch']}/{row['epochs']} loss={_figure(row['loss'])} "
            f"acc={_figure(row['accuracy'])} {validation}{row['seconds']:.0f}s "
            f"eta={row['eta_seconds']:.0f}s",
            flush=True,
        )

    if args.out and (Path(args.out).expanduser() / "metadata.json").is_file():
        # Allowed (a refit in place), but said at the start: an hour later it is too late to choose.
        print(f"note: --out {args.out} holds a model folder: the network trained replaces it", flush=True)
    try:
        for note in _left_out_notes(args.data, config.resolved().task):
            print(note, flush=True)
        result = train_classifier(config, on_epoch=report, progress_bar=not args.quiet)
    except TrainingDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics = result.metrics
    kept = (
        kept_epoch_label(metrics)
        if "best_epoch" in metrics
        else f"last epoch {metrics['refit']['epochs']}"
    )
    print(f"{kept}, temperature {result.temperature:.3f}, {result.training_seconds:.0f}s")
    for line in format_skipped(result.skipped_files, result.skipped_named, "training and validation"):
        print(line)
    if "validation" in metrics:
        print(format_metrics(metrics["validation"], "validation (group-held-out from TRAIN)"))
    else:
        print(f"trained on every TRAIN group; temperature from {config.temperature_source}")
    print_source_metrics(metrics)
    if args.out:
        try:
            path = result.save(args.out, default=args.mark_default)
        except OSError as error:
            # Found only now, after the whole run (a disk that filled meanwhile): said in one line.
            where = f": {error.filename}" if error.filename else ""
            print(f"error: the trained network could not be saved in --out {args.out} "
                  f"({error.strerror or error}{where}); what the folder held before is left as it was",
                  file=sys.stderr)
            return 1
        print(f"saved {path} ({len(result.model_bytes)} bytes, sha256 {result.model_sha256})")
    return 0


def _left_out_notes(data_dirs, task):
    """A line for each data folder's class folders the task has no class for: trained on nothing,
    which a misnamed folder (MONOCYTES/) would otherwise be without a word. The site's retraining
    says the same on the version's page (webapp.services.training)."""
    notes = []
    for data_dir in data_dirs:
        try:
            train_dir = resolve_layout(data_dir).train_dir
        except TrainingDataError:
            continue  # the training itself says what is wrong with the folder
        if note := left_out_note(train_dir, task):
            notes.append(f"note: {note}")
    return notes


def print_source_metrics(metrics):
    """Each source's record and held-out figures, one source after the other."""
    for name, source in metrics.get("sources", {}).items():
        counts = ", ".join(f"{key} {value}" for key, value in source["train_counts"].items())
        print(f"source {name}: {source['path']}; validation split {source['validation_split']}; "
              f"TRAIN {counts}")
        for split in ("TEST", "TEST_SIMPLE"):
            figures = source.get(split)
            if not figures:
                continue
            shown = figures.get("restricted_to") and " (on the classes it holds)" or ""
            print(format_metrics(figures, f"{name} {split}{shown}"))
            if "four_classes" in figures:
                print(format_metrics(figures["four_classes"], f"{name} {split}, the four shared types"))
            if "binary" in figures:
                print(format_metrics(figures["binary"], f"{name} {split} binary (summed)"))


def _check_out(out):
    """Raise ValueError where the model folder could not be written: found only after the whole
    training run, that would lose the trained network. An existing model folder may be replaced
    (the bundled networks are refitted in place: MODEL_CARD.md)."""
    if not out:
        return
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: give a folder for the network")
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {out} lies under {existing}, which is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out} cannot be written: {existing} is not writable")


def _held_out_calibration(args):
    """The recipe.HeldOutCalibration of the --temperature-from run(s). A pooled temperature is no
    run's own, so the runs' review thresholds, each fitted at its run's temperature, are not lent."""
    runs = [temperature_of_run(path) for path in args.temperature_from]
    if len(runs) == 1:
        return runs[0]
    recipes = [{**(run.trained_as or {}), **run.repeated} for run in runs]
    differing = sorted(
        key for key in set().union(*recipes) if len({repr(r.get(key)) for r in recipes}) > 1
    )
    if differing:
        raise ValueError(
            "the held-out runs were trained with different settings "
            f"({', '.join(differing)}): pool only runs of one recipe"
        )
    temperature, source = pooled_temperature(args.temperature_from, args.data, args.cache_dir)
    return HeldOutCalibration(temperature, source, runs[0].repeated, trained_as=runs[0].trained_as)


if __name__ == "__main__":
    sys.exit(main())
