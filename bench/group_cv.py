"""Repeated group hold-out of a training recipe: how it does on photographs it never saw.

    python bench/group_cv.py [--data DIR] [--splits 5] [--first-split-seed 101] [--keep DIR]
                             [the recipe options of classifier.train_cli: --arch, --task,
                              --epochs, --mixup A, --zoom Z, --input-spec JSON, --lr, ...]

TEST holds copies of only 71 original photographs (4 of them monocytes), so its accuracy moves in
steps of one photograph's 12-156 copies, and one validation split of ~40 groups is little better.
This trains the recipe once per validation split (15% of each class's TRAIN groups, a different
split seed each time; the training seed stays fixed) and prints, per split, the validation
accuracy at the last epoch (what a refit keeps) and at the best one, the ECE after temperature
scaling, and the mean and spread over the splits. TEST is never read. Each split is a full
training run: about 8 minutes for LeukoNet on this machine's 2 cores.

Then calibration, split by split: the ECE a split gets with the temperature fitted on the pooled
predictions of all the other splits, against the mean ECE it gets with each other split's own
temperature (what borrowing one held-out run's temperature, as a refit does, gives). The run
folders are kept with --keep DIR; `classifier.train_cli --validation-fraction 0 --temperature-from
DIR/split-*` refits the recipe with the temperature pooled over all of them.
"""

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from classifier.runtimes import quiet_tensorflow_startup  # noqa: E402
from classifier.training.command_line import add_recipe_arguments, recipe_given  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "blood-cell-images"
# Recipe settings the benchmark sets itself: each split its validation seed, and no refit.
BENCH_SETS = ("validation_seed", "temperature")


@dataclass
class SplitResult:
    split_seed: int
    groups: int
    last_accuracy: float
    best_accuracy: float
    best_epoch: int
    ece: float
    temperature: float
    run_dir: str = ""


def run_split(config_values, split_seed, keep_dir=None):
    from classifier.training import TrainingConfig, train_classifier

    config = TrainingConfig(**config_values, validation_seed=split_seed, evaluate_test=False)
    result = train_classifier(config)
    run_dir = str(result.save(Path(keep_dir) / f"split-{split_seed}")) if keep_dir else ""
    history = result.metadata["history"]
    metrics = result.metadata["metrics"]
    # From the history: a recipe that keeps its last epoch stores no best one.
    best = max(history, key=lambda row: row["val_accuracy"])
    return SplitResult(
        split_seed=split_seed,
        groups=metrics["validation_groups"],
        last_accuracy=history[-1]["val_accuracy"],
        best_accuracy=best["val_accuracy"],
        best_epoch=best["epoch"],
        ece=metrics["validation"]["ece"],
        temperature=result.temperature,
        run_dir=run_dir,
    )


def summary(results):
    """Mean and sample standard deviation of the last-epoch accuracy, and the mean ECE."""
    last = [r.last_accuracy for r in results]
    eces = [r.ece for r in results]
    spread = statistics.stdev if len(results) > 1 else (lambda values: 0.0)
    return {
        "splits": len(results),
        "last_accuracy_mean": statistics.fmean(last),
        "last_accuracy_sd": spread(last),
        "worst_last_accuracy": min(last),
        "ece_mean": statistics.fmean(eces),
    }


def calibration_by_split(results, predictions):
    """Per split: (the temperature pooled over the other splits, the ECE it gives this split, the
    mean ECE each other split's own temperature gives it)."""
    from classifier.calibration import fit_temperature, softmax
    from classifier.metrics import expected_calibration_error

    rows = []
    for k, split in enumerate(predictions):
        others = [p for j, p in enumerate(predictions) if j != k]
        pooled = fit_temperature(
            np.concatenate([p.logits for p in others]), np.concatenate([p.labels for p in others])
        )
        borrowed = [r.temperature for j, r in enumerate(results) if j != k]
        rows.append((
            pooled,
            expected_calibration_error(softmax(split.logits, pooled), split.labels),
            statistics.fmean(
                expected_calibration_error(softmax(split.logits, t), split.labels) for t in borrowed
            ),
        ))
    return rows


def print_groups_mostly_wrong(predictions):
    from classifier.metrics import groups_mostly_wrong

    print("photographs mostly misclassified (group, true type, copies, mostly called):")
    for split in predictions:
        _, worst = groups_mostly_wrong(
            split.images, split.logits, split.labels, split.class_names
        )
        listed = "; ".join(
            f"{row['group']} {row['label']} ({row['copies']}) as {row['mostly_called']}"
            for row in worst
        )
        print(f"  split seed {split.split_seed}: {listed or 'none'}")


def print_split(result):
    print(
        f"  split seed {result.split_seed}: {result.groups} groups held out, validation accuracy "
        f"{result.last_accuracy:.4f} at the last epoch, {result.best_accuracy:.4f} at the best "
        f"(epoch {result.best_epoch}), ECE {result.ece:.3f} at its temperature {result.temperature:.3f}",
        flush=True,
    )


def print_summary(figures):
    print(
        f"over {figures['splits']} splits: last-epoch validation accuracy "
        f"{figures['last_accuracy_mean']:.4f} +- {figures['last_accuracy_sd']:.4f} (sd), "
        f"worst {figures['worst_last_accuracy']:.4f}; ECE {figures['ece_mean']:.3f}"
    )


def print_calibration(results, rows):
    print("calibration of each split with a temperature from the others:")
    for result, (pooled, pooled_ece, borrowed_ece) in zip(results, rows, strict=True):
        print(
            f"  split seed {result.split_seed}: pooled over the others T {pooled:.3f} -> ECE "
            f"{pooled_ece:.3f}; one other split's T -> ECE {borrowed_ece:.3f} (mean)"
        )
    print(
        f"mean ECE: pooled {statistics.fmean(r[1] for r in rows):.3f}, "
        f"one other split's {statistics.fmean(r[2] for r in rows):.3f}"
    )


def main(argv=None):
    quiet_tensorflow_startup(os.environ)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--first-split-seed", type=int, default=101)
    add_recipe_arguments(parser, exclude=(*BENCH_SETS, "seed"))
    parser.add_argument("--seed", type=int, default=7, help="training seed, the same for every split")
    parser.add_argument("--keep", help="keep each split's run folder here (default: a temporary one)")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"dataset not found: {args.data}", file=sys.stderr)
        return 2
    if args.splits < 1:
        print("--splits must be at least 1", file=sys.stderr)
        return 2
    from classifier.errors import TrainingDataError
    from classifier.training import Recipe

    settings = recipe_given(args, exclude=BENCH_SETS)
    try:
        recipe = Recipe(**settings).resolved()
    except TrainingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config_values = dict(data_dir=args.data, **settings)
    print(f"{recipe.architecture} / {recipe.task} on {args.data}, {args.splits} group splits", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        keep_dir = args.keep or scratch
        results = []
        for split_seed in range(args.first_split_seed, args.first_split_seed + args.splits):
            try:
                results.append(run_split(config_values, split_seed, keep_dir))
            except TrainingDataError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print_split(results[-1])
        print_summary(summary(results))
        from classifier.training import validation_predictions

        predictions = [validation_predictions(r.run_dir, args.data) for r in results]
        print_groups_mostly_wrong(predictions)
        if len(results) > 1:
            print_calibration(results, calibration_by_split(results, predictions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
