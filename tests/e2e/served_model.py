"""Which real network the end-to-end and browser tests serve: LEUKOSCOPE_TEST_MODEL_DIR where set, else
the bundled default model when classifier/default_model/ holds one, else a quick model a developer
trained into var/dev-model."""

import os
from pathlib import Path

import pytest

from classifier.model_folder import bundled_model_folders, is_model_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_MODEL_DIR = REPO_ROOT / "var" / "dev-model"


def activate_served_model():
    """Register and activate the model to test with; skip when there is none."""
    from webapp.services.model_versions import (
        activate_version,
        ensure_default_model,
        register_model_directory,
    )

    chosen = os.environ.get("LEUKOSCOPE_TEST_MODEL_DIR")  # e.g. to run the suite on another bundled model
    if chosen:
        version, _ = register_model_directory(Path(chosen))
    elif bundled_model_folders():
        registered = ensure_default_model()
        version = registered[0][0]
    elif is_model_folder(DEV_MODEL_DIR):
        version, _ = register_model_directory(DEV_MODEL_DIR)
    else:
        pytest.skip(
            "no trained model: classifier/default_model/ is empty and var/dev-model/ is absent "
            "(train one: python -m classifier.train_cli --data ../shared/datasets/blood-cell-images "
            "--arch leukonet --task 4class --epochs 1 --max-images-per-class 150 --out var/dev-model)"
        )
    return activate_version(version)
