"""Train a classifier without Django: ``python -m classifier.train_cli --data DIR --arch NAME
--task TASK --epochs N --out FOLDER`` writes FOLDER/model.keras + FOLDER/metadata.json."""

import argparse
import json
import os
import sys

from classifier.architectures import ARCHITECTURES
from classifier.calibration import kept_epoch_label, temperature_of_run
from classifier.errors import TrainingDataError
from classifier.metrics import format_metrics
from classifier.runtimes import quiet_tensorflow_startup
from classifier.training import DEFAULT_ZOOM, TrainingConfig, pooled_temperature, train_classifier


def _figure(value):
    return "n/a" if value is None else f"{value:.4f}"


def add_recipe_arguments(parser):
    """The training-recipe options (each defaults to the architecture's recipe), shared with
    bench/group_cv.py so that a recipe compared over group splits is the one trained here."""
    parser.add_argument("--batch-size", type=int, default=None, help="default 64")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--window-scale", default=None, choices=("image", "reference"), help="default: image"
    )
    parser.add_argument(
        "--input-spec",
        type=json.loads,
        default=None,
        help='e.g. {"height": 96, "width": 96, '
        '"mode": "cell", "crop": 128} (default: the architecture\'s)',
    )
    parser.add_argument("--label-smoothing", type=float, default=None)
    parser.add_argument(
        "--width", type=float, default=None, help="LeukoNet's filter counts times this (default 1)"
    )
    parser.add_argument(
        "--mixup", type=float, default=None, help="mixup Beta(a, a); 0 = off (default: the arch's)"
    )
    parser.add_argument("--weight-decay", type=float, default=None, help="default 0.005")
    parser.add_argument(
        "--colour-jitter",
        type=float,
        default=None,
        help="+- per-channel gain of the stain augmentation (default 0.04 for white-balanced "
        "inputs, else 0.1)",
    )
    parser.add_argument(
        "--zoom",
        type=float,
        default=None,
        help=f"zoom augmentation: scale factor exp(U(-z, z)) (default {DEFAULT_ZOOM})",
    )


def recipe_given(args):
    """TrainingConfig fields for the recipe options given on the command line (None: not given)."""
    given = {
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "window_scale": args.window_scale,
        "input_spec": args.input_spec,
        "label_smoothing": args.label_smoothing,
        "mixup": args.mixup,
        "weight_decay": args.weight_decay,
        "colour_jitter": args.colour_jitter,
        "zoom": args.zoom,
        "width": args.width,
    }
    return {key: value for key, value in given.items() if value is not None}


def main(argv=None):
    quiet_tensorflow_startup(os.environ)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="dataset root (with TRAIN/) or CLASS/ dirs")
    parser.add_argument("--arch", default="leukonet", choices=ARCHITECTURES)
    parser.add_argument("--task", default="4class", choices=("binary", "4class"))
    parser.add_argument("--epochs", type=int, default=None)
    add_recipe_arguments(parser)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--max-images-per-class", type=int, default=None)
    parser.add_argument("--validation-seed", type=int, default=None, help="default: --seed")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.15,
        help="share of TRAIN groups held out per class; 0 trains on every group (a refit: "
        "the last epoch is kept, and --temperature-from or --temperature is required)",
    )
    calibration = parser.add_mutually_exclusive_group()
    calibration.add_argument(
        "--temperature-from",
        metavar="PATH",
        nargs="+",
        help="use the calibration temperature of a held-out run of the same recipe: its model "
        "folder, or its metadata.json; with several run folders (each its own validation split), "
        "one temperature fitted on their pooled validation predictions. The refit repeats the "
        "run's input spec and augmentation unless given here",
    )
    calibration.add_argument("--temperature", type=float, default=None)
    parser.add_argument(
        "--keep-last-epoch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the last epoch's network, not the best on validation (default: the arch's "
        "recipe; LeukoNet keeps the last, as its refit does)",
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
    args = parser.parse_args(argv)
    temperature, temperature_source, recipe = args.temperature, "", {}
    if args.temperature is not None:
        temperature_source = "given on the command line"
    if args.temperature_from:
        try:
            temperature, temperature_source, recipe = _held_out_calibration(args)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    given = recipe_given(args)
    repeated = {key: value for key, value in recipe.items() if key not in given}
    if repeated:
        listed = ", ".join(f"{key} {value}" for key, value in sorted(repeated.items()))
        print(f"repeating the held-out run's settings: {listed}")

    config = TrainingConfig(
        data_dir=args.data,
        architecture=args.arch,
        task=args.task,
        epochs=args.epochs,
        seed=args.seed,
        max_images_per_class=args.max_images_per_class,
        evaluate_test=not args.no_test,
        keep_last_epoch=args.keep_last_epoch,
        validation_seed=args.validation_seed,
        cache_dir=args.cache_dir,
        validation_fraction=args.validation_fraction,
        temperature=temperature,
        temperature_source=temperature_source,
        **repeated,
        **given,
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

    try:
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
    print(
        f"{kept}, temperature {result.temperature:.3f}, "
        f"{result.training_seconds:.0f}s, skipped files {result.skipped_files}"
    )
    if "validation" in metrics:
        print(format_metrics(metrics["validation"], "validation (group-held-out from TRAIN)"))
    else:
        print(f"trained on every TRAIN group; temperature from {temperature_source}")
    for split in ("TEST", "TEST_SIMPLE"):
        if split in metrics:
            print(format_metrics(metrics[split], split))
            if "binary" in metrics[split]:
                print(format_metrics(metrics[split]["binary"], f"{split} binary (summed)"))
    if args.out:
        path = result.save(args.out, default=args.mark_default)
        print(f"saved {path} ({len(result.model_bytes)} bytes, sha256 {result.model_sha256})")
    return 0


def _held_out_calibration(args):
    """(temperature, where from, settings to repeat) of the --temperature-from run(s)."""
    runs = [temperature_of_run(path) for path in args.temperature_from]
    if len(runs) == 1:
        return runs[0]
    recipes = [recipe for _, _, recipe in runs]
    differing = sorted(
        key for key in set().union(*recipes) if len({repr(r.get(key)) for r in recipes}) > 1
    )
    if differing:
        raise ValueError(
            "the held-out runs were trained with different settings "
            f"({', '.join(differing)}): pool only runs of one recipe"
        )
    temperature, source = pooled_temperature(args.temperature_from, args.data, args.cache_dir)
    return temperature, source, recipes[0]


if __name__ == "__main__":
    sys.exit(main())
