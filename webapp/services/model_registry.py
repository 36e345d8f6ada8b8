"""Which network serves, and a per-process cache of the loaded model.

Workers ask for the active version on every task (one indexed query) and reload only when it
changed, so an admin's activation takes effect without restarting anything.
"""

import threading
from collections import OrderedDict

from django.conf import settings

from webapp.models import ModelVersion


class NoActiveModel(RuntimeError):
    pass


_cache_lock = threading.Lock()
_loaded = OrderedDict()  # version id -> CellClassifier, most recently used last
# The active network, and the one a sample classified before an activation (photographs added to
# that sample keep its network), serve side by side without reloading one another.
LOADED_NETWORKS = 2


def classifier_metadata(version):
    return {
        "architecture": version.architecture,
        "task": version.task,
        "class_names": list(version.class_names),
        "input_spec": dict(version.input_spec),
        "temperature": version.temperature,
        "hyperparameters": dict(version.hyperparameters),
        "seed": version.seed,
    }


def active_version():
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if version is None:
        raise NoActiveModel("No model version is active: an admin must activate one.")
    return version


def load_classifier(version):
    """The CellClassifier for a version, loaded once per process from the bytes in the database."""
    with _cache_lock:
        if version.pk in _loaded:
            _loaded.move_to_end(version.pk)
        else:
            from classifier.inference import CellClassifier  # TensorFlow: worker processes only

            model_bytes = (
                ModelVersion.objects.filter(pk=version.pk).values_list("model_bytes", flat=True).get()
            )
            if not model_bytes:
                raise NoActiveModel(f"Model version v{version.pk} holds no stored network.")
            _loaded[version.pk] = CellClassifier.from_bytes(
                bytes(model_bytes), classifier_metadata(version), runtime=settings.INFERENCE_RUNTIME
            )
            while len(_loaded) > LOADED_NETWORKS:
                _loaded.popitem(last=False)
        return _loaded[version.pk]
