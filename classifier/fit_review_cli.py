"""Fit the review threshold of a trained model folder that has none: ``python -m
classifier.fit_review_cli --model FOLDER --data DIR [--data DIR ...]``.

A training run fits it itself (classifier.training.evaluation.review_record); this repeats that
step for a network trained before runs did, on the validation split its run held out, rebuilt from
its recorded seed and settings (the cell count is checked against the run's), and writes the record
into the folder's metadata.json under metrics.review. The network's weights are not touched.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from classifier import model_folder, ood
from classifier.errors import TrainingDataError
from classifier.inference import load_keras_bytes
from classifier.runtimes import quiet_tensorflow_startup
from classifier.training import TrainingConfig, data, evaluation
from classifier.training.recipe import Recipe, refit_settings


def validation_arrays(metadata, data_dirs, cache_dir=None):
    """The training arrays of the run that made ``metadata``, its validation split as it held it out."""
    hyperparameters = metadata.get("hyperparameters") or {}
    recipe = Recipe(
        architecture=metadata["architecture"], task=metadata["task"],
        **refit_settings(hyperparameters, metadata.get("input_spec")),
        validation_fraction=hyperparameters.get("validation_fraction"),
        validation_seed=hyperparameters.get("validation_seed"),
        max_images_per_class=hyperparameters.get("max_images_per_class"),
        seed=metadata.get("seed"),
    ).resolved()
    if recipe.refit:
        raise TrainingDataError("the network was trained on every TRAIN cell: it has no validation split")
    config = TrainingConfig(data_dir=list(data_dirs), cache_dir=cache_dir)
    arrays = data.load_arrays(data.select_images(config, recipe), recipe, config)
    expected = metadata.get("validation_count")
    if expected is not None and len(arrays.y_val) != int(expected):
        raise TrainingDataError(
            f"the rebuilt validation split holds {len(arrays.y_val)} cells, the run's held {expected}: "
            "give the data folders the network was trained on, in the same order"
        )
    return recipe, arrays


def fit_review(model_dir, data_dirs, cache_dir=None):
    """The review record of a model folder's network, fitted on its run's validation split."""
    import keras

    model_bytes, metadata = model_folder.read_model_folder(model_dir)
    model = load_keras_bytes(model_bytes)
    head = ood.OodHead.from_model(model)
    # The probabilities alone, as a training run's network gives them before the score is added.
    network = keras.Model(model.input, model.outputs[0], name=model.name)
    recipe, arrays = validation_arrays(metadata, data_dirs, cache_dir)
    temperature = float(metadata.get("temperature") or 1.0)
    return evaluation.review_record(network, arrays, recipe, temperature, head)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a model folder (model.keras + metadata.json)")
    parser.add_argument("--data", required=True, action="append",
                        help="a data folder the network was trained on; again for each further one, in order")
    parser.add_argument("--cache-dir", default=None, help="prepared-input cache (default: var/cache)")
    args = parser.parse_args(argv)
    quiet_tensorflow_startup(os.environ)
    try:
        record = fit_review(args.model, args.data, args.cache_dir)
    except (TrainingDataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metadata_file = Path(args.model) / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata.setdefault("metrics", {})["review"] = record
    metadata_file.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
