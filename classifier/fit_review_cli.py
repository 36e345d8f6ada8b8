"""Fit the review threshold of a trained model folder, and measure the flag on each source's TEST:
``python -m classifier.fit_review_cli --model FOLDER --data DIR [--data DIR ...] [--test]``.

A training run does both itself (classifier.training.evaluation.review_record and
review_flag_figures); this repeats them for a network trained before runs did, or before runs
fitted the threshold on the flag as served (December 2026; first looks in float arithmetic
until then). The threshold is fitted on the validation split its run held out, rebuilt from its
recorded seed and settings (the cell count is checked against the run's) and read as the site
serves it, and written into the folder's metadata.json under metrics.review. With ``--test`` a
folder that has a threshold keeps it, and each source's TEST is measured again as the site
serves it (its runtime and second looks; runs stored the first look in float arithmetic until
December 2026), the review flag at that threshold, and written in place of the figures the run
stored, once the cell counts agree with the run's. The network's weights are not touched.
"""

import argparse
import json
import os
import sys

from classifier import model_folder, ood
from classifier.errors import TrainingDataError
from classifier.inference import CellClassifier
from classifier.runtimes import quiet_tensorflow_startup
from classifier.training import TrainingConfig, data, evaluation, export
from classifier.training.recipe import Recipe, refit_settings


def run_recipe(metadata, data_dirs, cache_dir=None):
    """(recipe, config, image selection) of the run that made ``metadata``, on data_dirs."""
    hyperparameters = metadata.get("hyperparameters") or {}
    recipe = Recipe(
        architecture=metadata["architecture"], task=metadata["task"],
        **refit_settings(hyperparameters, metadata.get("input_spec")),
        validation_fraction=hyperparameters.get("validation_fraction"),
        validation_seed=hyperparameters.get("validation_seed"),
        max_images_per_class=hyperparameters.get("max_images_per_class"),
        seed=metadata.get("seed"),
        # A refit's, borrowed: the recipe wants one to train on every cell.
        temperature=metadata.get("temperature") if hyperparameters.get("validation_fraction") == 0 else None,
    ).resolved()
    config = TrainingConfig(data_dir=list(data_dirs), cache_dir=cache_dir)
    return recipe, config, data.select_images(config, recipe)


def check_recorded_data(metadata, selection, task):
    """Raise TrainingDataError where a data folder is not the one the run recorded (a version
    trained since runs kept per-source records): another position among the folders, other
    counts of each type in TRAIN or TEST, or, where the run's fingerprint names files inside their
    folder (export.FINGERPRINT_NAMES; earlier records hashed each path as given, so the same
    folder reached by another path would read as other data), other TRAIN files."""
    recorded = (metadata.get("metrics") or {}).get("sources") or {}
    for position, source in enumerate(selection.sources):
        stored = recorded.get(source.name)
        if not isinstance(stored, dict) or "train_counts" not in stored:
            continue
        if stored.get("order", position) != position:
            raise TrainingDataError(f"{source.name} was data folder {stored['order'] + 1} of the run, here "
                                    f"{position + 1}: give the folders in the run's order")
        now = export.source_record(source, task)
        splits = {"TRAIN": (now["train_counts"], stored["train_counts"]),
                  **{split: (now["test_counts"].get(split), counts)
                     for split, counts in (stored.get("test_counts") or {}).items()}}
        for split, (found, counted) in splits.items():
            if found != counted:
                raise TrainingDataError(f"{source.name} {split}: cells of each type {found}, where the "
                                        f"run counted {counted}: give the data the network was trained on")
        comparable = stored.get("fingerprint_names") == export.FINGERPRINT_NAMES
        if comparable and stored.get("fingerprint") != now["fingerprint"]:
            raise TrainingDataError(f"{source.name} TRAIN: as many cells of each type as the run's, but "
                                    "other files (their names or sizes differ): give the data the network "
                                    "was trained on")


def fit_review(model_dir, data_dirs, cache_dir=None):
    """The review record of a model folder's network, fitted on its run's validation split as the
    site serves it. Raises TrainingDataError where the rebuilt split is not the run's."""
    served = CellClassifier.from_directory(model_dir)
    metadata = served.metadata
    recipe, config, selection = run_recipe(metadata, data_dirs, cache_dir)
    check_recorded_data(metadata, selection, recipe.task)
    if recipe.refit:
        raise TrainingDataError("the network was trained on every TRAIN cell: it has no validation split")
    record = evaluation.review_record(served, selection, recipe, config)
    held = sum(figures["cells"] for figures in (record or {}).get("sources", {}).values())
    expected = metadata.get("validation_count")
    if record is None or (expected is not None and held != int(expected)):
        raise TrainingDataError(
            f"the rebuilt validation split holds {held} cells, the run's held {expected}: "
            "give the data folders the network was trained on, in the same order"
        )
    return record


def served_test_figures(model_dir, data_dirs, threshold, cache_dir=None):
    """({source: {split: figures}}, the runtime that computed them): a model folder's network on
    each source's TEST (and TEST_SIMPLE) as the site serves it (evaluation.test_split_metrics),
    with the review flag at ``threshold``. Raises TrainingDataError where a split's cell count is
    not the one the run stored: other data than the network was measured on."""
    served = CellClassifier.from_directory(model_dir)
    metadata = served.metadata
    recipe, config, selection = run_recipe(metadata, data_dirs, cache_dir)
    check_recorded_data(metadata, selection, recipe.task)
    tests = evaluation.test_split_metrics(served, selection, recipe, config, threshold)
    metrics = metadata.get("metrics") or {}
    for source, splits in tests["sources"].items():
        stored = _stored_splits(metrics, source)
        for split, figures in splits.items():
            counts = [place.get("n") for place in stored[split]]
            if counts[:1] != [figures["n"]]:
                was = f"n = {counts[0]}" if counts else "none"
                raise TrainingDataError(
                    f"{source} {split}: n = {figures['n']} where the run stored {was}: "
                    "give the data folders the network was measured on"
                )
    return tests["sources"], served.serving_runtime


def record_test_figures(metrics, figures, runtime):
    """Write each split's figures in place of those stored, wherever they are kept."""
    for source, splits in figures.items():
        stored = _stored_splits(metrics, source)
        for split, measured in splits.items():
            for place in stored[split]:
                place.clear()
                place.update(measured)
    metrics["served_by"] = runtime


def _stored_splits(metrics, source):
    """[each stored figures dict of a source's TEST and TEST_SIMPLE, by split]: under
    metrics.sources, and, for a run on one source, at the top level too, where it keeps them."""
    sources = metrics.get("sources") or {}
    places = [sources.get(source) or {}]
    if list(sources) in ([], [source]):
        places.append(metrics)
    return {split: [place[split] for place in places if isinstance(place.get(split), dict)]
            for split in ("TEST", "TEST_SIMPLE")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a model folder (model.keras + metadata.json)")
    parser.add_argument("--data", required=True, action="append",
                        help="a data folder the network was trained on; again for each further one, in order")
    parser.add_argument("--test", action="store_true",
                        help="keep the folder's threshold where it has one, and measure each source's TEST "
                             "as the site serves it, with the flag at that threshold")
    parser.add_argument("--cache-dir", default=None, help="prepared-input cache (default: var/cache)")
    args = parser.parse_args(argv)
    quiet_tensorflow_startup(os.environ)
    try:
        metadata = model_folder.read_metadata(args.model)
        metrics = metadata.setdefault("metrics", {})
        if not (args.test and ood.fitted_confidence_threshold(metrics) is not None):
            metrics["review"] = fit_review(args.model, args.data, args.cache_dir)
        printed = {"review": metrics["review"]}
        if args.test:
            threshold = ood.confidence_threshold(metrics)
            printed["TEST"], runtime = served_test_figures(args.model, args.data, threshold, args.cache_dir)
            record_test_figures(metrics, printed["TEST"], runtime)
    except (TrainingDataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model_folder.write_metadata(args.model, metadata)
    print(json.dumps(printed, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
