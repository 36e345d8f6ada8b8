"""What a training run leaves behind: the network as the bytes of a .keras file, and the metadata
a model folder and a model version keep beside it (recipe, data, history, metrics, versions)."""

import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from classifier import dataset, ood
from classifier.architectures import GRADCAM_LAYER, build_model
from classifier.model_folder import write_model_folder
from classifier.training.data import data_folders

# How a source's file-list fingerprint names its files (classifier.dataset.fingerprint): inside
# the data folder, so it identifies the same data reached by any path. Records without this key
# hashed each path as given.
FINGERPRINT_NAMES = "relative to the data folder"


@dataclass
class TrainingResult:
    model_bytes: bytes
    model_sha256: str
    metadata: dict
    class_names: list
    input_spec: dict
    hyperparameters: dict
    seed: int
    temperature: float
    class_counts: dict
    dataset_fingerprint: str
    history: list
    metrics: dict
    training_seconds: float
    skipped_files: int = 0
    skipped_named: list = field(default_factory=list)  # the first skipped files, with why

    def save(self, directory, default=False):
        """Write the bundled-model folder (model.keras + metadata.json); ``default`` marks it as
        the bundled model a fresh install activates."""
        metadata = {**self.metadata, "default": True} if default else self.metadata
        return write_model_folder(directory, self.model_bytes, metadata)


def model_to_bytes(model):
    """The .keras file of a model (weights and architecture, no optimizer state)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def exported_bytes(model, recipe, ood_head=None):
    """A fresh, uncompiled copy of the trained network: no optimizer state in the stored file;
    with the out-of-distribution score as its second output where ``ood_head`` is given."""
    n_classes = len(recipe.class_names)
    export = build_model(recipe.architecture, recipe.task, recipe.input_spec, n_classes, recipe.width)
    export.set_weights(model.get_weights())
    if ood_head is not None:
        export = ood.with_ood_output(export, ood_head)
    return model_to_bytes(export)


def served_classifier(model_bytes, recipe, temperature, runtime):
    """The exported network as the site's workers would serve it (CellClassifier), to measure it
    so before its version exists."""
    from classifier.inference import CellClassifier

    metadata = {"architecture": recipe.architecture, "task": recipe.task, "class_names": recipe.class_names,
                "input_spec": recipe.input_spec, "temperature": temperature, "gradcam_layer": GRADCAM_LAYER}
    return CellClassifier.from_bytes(model_bytes, metadata, runtime)


def source_record(source, task):
    """What a version keeps of one data folder it learnt from: where it was, which classes it held
    and how many of each, which exact files (fingerprint), and how its validation split was made."""
    test_counts = {}
    for split, folder in source.layout.eval_dirs.items():
        images = dataset.list_images(folder, task, split, source.originals)
        if images:
            test_counts[split] = dict(sorted(Counter(image.class_name for image in images).items()))
    return {
        "path": str(source.layout.root),
        "classes": sorted({image.class_name for image in source.all_train}),
        "train_counts": dict(sorted(Counter(i.class_name for i in source.all_train).items())),
        "validation_count": len(source.validation),
        "test_counts": test_counts,
        "fingerprint": dataset.fingerprint(source.all_train, [source.layout.root]),
        "fingerprint_names": FINGERPRINT_NAMES,
        "validation_split": source.split_rule,
    }


def with_source_records(metrics, tests, selection, recipe):
    """The run's metrics with every source's record and figures under "sources", each with its
    position in the order the sources were given (validation from calibrate, held-out splits from
    the tests). The position is stored because PostgreSQL's jsonb keeps no key order."""
    validation = metrics.get("sources", {})
    sources = {
        source.name: {
            "order": position,
            **source_record(source, recipe.task),
            **validation.get(source.name, {}),
            **tests["sources"].get(source.name, {}),
        }
        for position, source in enumerate(selection.sources)
    }
    return {**metrics, **{k: v for k, v in tests.items() if k != "sources"}, "sources": sources}


def training_result(config, recipe, selection, arrays, fitted, temperature, metrics, started, model_bytes):
    """The TrainingResult of a finished run, its network exported (exported_bytes); ``started``
    is its time.monotonic() at the start."""
    import keras
    import tensorflow as tf

    sha = hashlib.sha256(model_bytes).hexdigest()
    training_seconds = round(time.monotonic() - started, 1)
    fingerprint = dataset.fingerprint(selection.all_train + selection.extras,
                                      [source.layout.root for source in selection.sources])
    hyperparameters = {
        **recipe.hyperparameters(),
        "best_epoch": fitted.best_epoch,
        "train_margin": arrays.margin,
    }
    metadata = {
        "format": 1,
        "architecture": recipe.architecture,
        "task": recipe.task,
        "class_names": arrays.class_names,
        "input_spec": recipe.input_spec,
        "temperature": temperature,
        "gradcam_layer": GRADCAM_LAYER,
        "hyperparameters": hyperparameters,
        "seed": recipe.seed,
        "class_counts": arrays.class_counts,
        "validation_count": int(len(arrays.y_val)),
        "dataset_path": os.pathsep.join(data_folders(config.data_dir)),
        "dataset_fingerprint": fingerprint,
        "extra_samples": len(selection.extras),
        "history": fitted.history,
        "metrics": metrics,
        "training_seconds": training_seconds,
        "skipped_files": arrays.skipped,
        "model_sha256": sha,
        "size_bytes": len(model_bytes),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }
    # Fail here, not in the database, if something is not serialisable or not valid JSON (NaN).
    json.dumps(metadata, allow_nan=False)
    return TrainingResult(
        model_bytes=model_bytes,
        model_sha256=sha,
        metadata=metadata,
        class_names=arrays.class_names,
        input_spec=recipe.input_spec,
        hyperparameters=hyperparameters,
        seed=recipe.seed,
        temperature=temperature,
        class_counts=arrays.class_counts,
        dataset_fingerprint=fingerprint,
        history=fitted.history,
        metrics=metrics,
        training_seconds=training_seconds,
        skipped_files=arrays.skipped,
        skipped_named=arrays.skipped_named,
    )
