"""Leave-one-source-out: how a recipe trained on some labs does on a lab it never saw.

    python bench/sources.py [--data DIR --data DIR ...] [--runs DIR] [--no-train]
                            [the recipe options of classifier.train_cli: --arch, --task,
                             --epochs, --max-images-per-class, ...]

Trains the recipe (its defaults: the shipped one) on each source alone and on all of them
together, each a held-out run (its validation split fits the temperature and the threshold of the
out-of-distribution score), then measures every run on every source's TEST split as
bench/classify.py does, and prints:
- the matrix of (trained on) x (tested on) accuracy over the four leukocyte types every source
  shares (EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL), the probabilities renormalised over them;
- the review flag as the site raises it (calibrated confidence under 0.80, or an
  out-of-distribution score above 1) on every cell of the matrix: the share of cells flagged and
  of the network's errors among them, the unseen sources' marked.

A task whose classes a training set lacks (the 8 PBC classes, on blood-cell-images alone) falls
back to the four shared types for that run. Run folders are kept in --runs DIR (default:
DEFAULT_RUNS), one per training set, named after its sources joined by "+"; one already
there is reused, so a long training need not be repeated (--no-train: reuse only, and print the
matrix of the runs there). A kept run is reused only where it was trained with this recipe (network,
classes, seed and every recorded setting); another recipe's run is refused with the settings that
differ, so its figures are never printed as this recipe's.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.classify import default_sources, source_benchmark  # noqa: E402
from classifier import dataset, ood  # noqa: E402
from classifier.errors import TrainingDataError  # noqa: E402
from classifier.labels import FOUR_CLASSES, TASK_CLASSES  # noqa: E402
from classifier.model_folder import is_model_folder, read_metadata  # noqa: E402
from classifier.runtimes import quiet_tensorflow_startup  # noqa: E402
from classifier.training.command_line import add_recipe_arguments, recipe_given  # noqa: E402
from classifier.training.recipe import Recipe, differences_from_run  # noqa: E402

# A folder per recipe, so that a machine keeps each recipe's runs: earlier ones were kept in
# var/bench-sources-gn (every window stain-normalised, 96x96), var/bench-sources-unnorm (96x96),
# var/bench-sources-128 (saturation 0.75-1.25x) and var/bench-sources-sat09 (no clipped exposure).
# A kept run trained otherwise than the recipe asked is refused, not reused (RecipeOfAnotherRun).
DEFAULT_RUNS = ROOT / "var" / "bench-sources-clip03"
# Every run is a held-out run: its validation split fits the temperature and the score's threshold.
BENCH_SETS = ("validation_fraction", "temperature")


def source_name(folder):
    return Path(folder).expanduser().resolve().name


def training_sets(folders):
    """[(run name, its data folders)]: each source alone, then all of them together."""
    sets = [(source_name(folder), [folder]) for folder in folders]
    if len(folders) > 1:
        sets.append(("+".join(source_name(folder) for folder in folders), list(folders)))
    return sets


def train_classes(folder):
    """The class folder names of a source's TRAIN split (or of the folder itself)."""
    layout = dataset.resolve_layout(folder)
    return {path.name.upper() for path in layout.train_dir.iterdir() if path.is_dir()}


def task_for(folders, task):
    """The recipe's task, or the four shared types where the folders lack some of its classes."""
    held = set().union(*(train_classes(folder) for folder in folders))
    return task if task == "binary" or set(TASK_CLASSES[task]) <= held else "4class"


def train_run(folders, run_dir, settings):
    """Train the recipe on folders (a held-out run) and keep it in run_dir; return run_dir."""
    from classifier.training import TrainingConfig, train_classifier

    data = folders[0] if len(folders) == 1 else list(folders)
    config = TrainingConfig(data_dir=data, evaluate_test=False, **settings)
    result = train_classifier(config)
    result.save(run_dir)
    return Path(run_dir)


class RecipeOfAnotherRun(LookupError):
    """A kept run folder trained otherwise than the recipe asked: its figures are not this recipe's."""

    def __init__(self, run_dir, differing):
        listed = ", ".join(f"{name} {run} (asked: {asked})" for name, (run, asked) in differing.items())
        super().__init__(
            f"{run_dir} holds a run of another recipe: {listed}. Give --runs a folder of its own for "
            "this recipe, or remove that run to train it again"
        )


def check_kept_run(run_dir, settings):
    """Raise RecipeOfAnotherRun where the run kept in run_dir was not trained as ``settings`` (its
    task included) would train it."""
    differing = differences_from_run(Recipe(**settings).resolved(), read_metadata(run_dir))
    if differing:
        raise RecipeOfAnotherRun(run_dir, differing)


def evaluate_run(run_dir, test_folders, review_threshold=None):
    """{test source: bench/classify.py's figures of the run on its TEST split}, the review flag at
    ``review_threshold``, else at the run's fitted one as the site would apply it."""
    from classifier.inference import CellClassifier

    classifier = CellClassifier.from_directory(run_dir)
    if review_threshold is None:
        review_threshold = ood.confidence_threshold(classifier.metadata.get("metrics"))
    return {
        source_name(folder): source_benchmark(classifier, folder, review_threshold, speed=False)
        for folder in test_folders
    }


def four_type_accuracy(report):
    """Accuracy over the four shared leukocyte types, from a source_benchmark report."""
    if report.get("four_classes"):
        return report["four_classes"]["accuracy"]
    if report["held_classes"] == list(FOUR_CLASSES):
        return report["test"]["accuracy"]
    return None


def matrix_lines(results, trained_on):
    """The printed matrices of results {run name: {test source: report}}; trained_on maps each
    run name to the source names it learnt from."""
    tests = list(next(iter(results.values())))
    width = max(12, *(len(name) + 2 for name in results))
    column = max(12, *(len(name) + 2 for name in tests))
    header = f"{'trained on':<{width}}" + "".join(f"{name:>{column}}" for name in tests)
    lines = ["4-class accuracy over EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL (rows: trained on, "
             "columns: TEST of; * a source the run never saw)", header]
    for run, reports in results.items():
        cells = []
        for test in tests:
            accuracy = four_type_accuracy(reports[test])
            mark = "" if test in trained_on[run] else "*"
            cells.append(f"{'n/a' if accuracy is None else f'{accuracy:.1%}'}{mark}".rjust(column))
        lines.append(f"{run:<{width}}" + "".join(cells))
    lines.append("")
    thresholds = ", ".join(f"{run} {next(iter(reports.values()))['review_threshold']:.2f}"
                           for run, reports in results.items())
    lines.append(f"review flag (confidence under the run's threshold: {thresholds}; or out-of-distribution "
                 "score above 1): cells flagged / errors caught")
    lines.append(header)
    for run, reports in results.items():
        cells = []
        for test in tests:
            review = reports[test]["review"]
            mark = "" if test in trained_on[run] else "*"
            text = f"{review['flagged_share']:.0%}/{review['errors_caught']:.0%}{mark}"
            cells.append(text.rjust(column))
        lines.append(f"{run:<{width}}" + "".join(cells))
    lines.extend(unseen_lines(results, trained_on))
    return lines


def unseen_lines(results, trained_on):
    """One line per run and source it never saw: what the review flag caught there."""
    lines = []
    for run, reports in results.items():
        for test, report in reports.items():
            if test in trained_on[run]:
                continue
            review = report["review"]
            score = "" if review["has_ood_score"] else " (no out-of-distribution score: confidence alone)"
            foreign = review["foreign"]
            other = (
                f"; cells of types it has no class for: {foreign['flagged_share']:.1%} of "
                f"{foreign['cells']} flagged" if foreign["cells"] else ""
            )
            lines.append(
                f"unseen {test} for {run}: {review['errors_caught']:.1%} of its {review['errors']} errors "
                f"caught, {review['flagged_share']:.1%} of its cells flagged{score}{other}"
            )
    return lines


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", metavar="DIR",
                        help="a source's data folder (TRAIN/ and TEST/); repeat for each (default: the "
                        "shared datasets' blood-cell-images and pbc)")
    parser.add_argument("--runs", default=str(DEFAULT_RUNS),
                        help="where the run folders are kept and reused "
                        f"(default: {DEFAULT_RUNS.relative_to(ROOT)})")
    parser.add_argument("--no-train", action="store_true", help="reuse the run folders only; train none, "
                        "and leave the missing runs out of the matrix")
    add_recipe_arguments(parser, exclude=BENCH_SETS)
    return parser


def run_matrix(folders, runs, settings, train=True):
    """(results {run name: {test source: report}}, {run name: the sources it learnt from}),
    training the runs not yet in ``runs``. With train off a missing run is left out of the matrix
    (a run cut short still prints what it trained); LookupError where none is there."""
    task = Recipe(task=settings.get("task")).resolved().task
    results, trained_on, missing = {}, {}, []
    for name, members in training_sets(folders):
        run_dir = Path(runs) / name
        run_settings = {**settings, "task": task_for(members, task)}
        if is_model_folder(run_dir):
            check_kept_run(run_dir, run_settings)
        elif not train:
            missing.append(str(run_dir))
            print(f"left out: no run folder {run_dir} (--no-train)", file=sys.stderr, flush=True)
            continue
        else:
            print(f"training {name} ({run_settings['task']}) into {run_dir}", flush=True)
            train_run(members, run_dir, run_settings)
        results[name] = evaluate_run(run_dir, folders)
        trained_on[name] = {source_name(folder) for folder in members}
    if not results:
        raise LookupError(f"no run folder {', '.join(missing)} (--no-train)")
    return results, trained_on


def main(argv=None):
    quiet_tensorflow_startup(os.environ)
    args = build_parser().parse_args(argv)
    folders = args.data or [str(path) for path in default_sources()]
    if not folders or any(not Path(folder).is_dir() for folder in folders):
        print(f"dataset not found: {', '.join(folders) or 'no --data given'}", file=sys.stderr)
        return 2
    settings = recipe_given(args, exclude=BENCH_SETS)
    try:
        results, trained_on = run_matrix(folders, args.runs, settings, train=not args.no_train)
    except (TrainingDataError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(matrix_lines(results, trained_on)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
