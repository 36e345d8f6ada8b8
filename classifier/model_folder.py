"""A trained network kept as a folder: ``model.keras`` (the Keras archive, no optimizer state) and
``metadata.json`` (what serving it needs, where it came from, and the archive's SHA-256).

``train_cli --out`` writes one, the bundled networks ship as several under
``classifier/default_model/``, and the site registers them as model versions. This module alone
knows the two file names and the layout; everything else asks it.
"""

import hashlib
import json
import os
from pathlib import Path

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
BUNDLED_MODELS_DIR = Path(__file__).resolve().parent / "default_model"


class ModelFolderError(ValueError):
    """A folder that is no usable model folder; the message says what is wrong with it."""


def write_model_folder(directory, model_bytes, metadata):
    """Write model.keras + metadata.json (with the archive's SHA-256 and size) into ``directory``.

    Both files are written whole beside the old ones before either replaces its own: a disk that
    fills while the archive is written (a refit in place) leaves the folder's network as it was.
    Parts a writer killed mid-write left behind are removed first (_remove_stale_parts)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(directory)
    metadata = {
        **metadata,
        "model_file": MODEL_FILE,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "size_bytes": len(model_bytes),
    }
    parts = []
    try:
        parts.append(_written_beside(directory / MODEL_FILE, model_bytes))
        parts.append(_written_beside(directory / METADATA_FILE, _metadata_text(metadata).encode()))
        os.replace(parts[0], directory / MODEL_FILE)
        os.replace(parts[1], directory / METADATA_FILE)
    finally:
        for part in parts:  # gone once moved into place
            part.unlink(missing_ok=True)
    return directory


def write_metadata(directory, metadata):
    """Replace a model folder's metadata.json (the archive beside it untouched)."""
    _remove_stale_parts(Path(directory))
    path = Path(directory) / METADATA_FILE
    os.replace(_written_beside(path, _metadata_text(metadata).encode()), path)


def _metadata_text(metadata):
    return json.dumps(metadata, indent=1, sort_keys=True) + "\n"


def _part_name(name, pid):
    return f".{name}.{pid}.part"


def _written_beside(path, content):
    """``content`` written whole to a temporary file beside ``path``, for os.replace to put in its
    place; nothing is left behind where the write fails."""
    part = path.with_name(_part_name(path.name, os.getpid()))
    try:
        part.write_bytes(content)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part


def _remove_stale_parts(directory):
    """Remove the parts (_written_beside) of a writer no longer running: one killed between writing
    a part and moving it into place (SIGKILL, a power cut) left it there for good, megabytes of a
    network each time, in a folder no other clean-up reads (train_cli --out anywhere, the bundled
    networks' own folders). A part whose writer still runs (another process writing this folder
    now) is left to it."""
    for name in (MODEL_FILE, METADATA_FILE):
        for part in directory.glob(_part_name(name, "*")):
            pid = part.name[len(f".{name}."):-len(".part")]
            if pid.isdigit() and not _running(int(pid)):
                try:
                    part.unlink(missing_ok=True)
                except OSError:  # not ours to remove: the write itself goes on
                    pass


def _running(pid):
    """Whether a process of this id runs on this machine (ours among them)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except OverflowError:  # no process could have it
        return False
    return True


def is_model_folder(path):
    return (Path(path) / METADATA_FILE).is_file()


def read_metadata(path):
    """The metadata of a model folder, given the folder or its metadata.json."""
    path = Path(path)
    metadata_file = path / METADATA_FILE if path.is_dir() else path
    try:
        return json.loads(metadata_file.read_text())
    except FileNotFoundError:
        raise ModelFolderError(f"{path} is not a model folder: it holds no {METADATA_FILE}.") from None
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{metadata_file} cannot be read: {error}") from None


def read_model_folder(directory):
    """(model bytes, metadata) of a model folder, the bytes checked against the recorded SHA-256."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    model_file = directory / metadata.get("model_file", MODEL_FILE)
    try:
        model_bytes = model_file.read_bytes()
    except OSError as error:
        raise ModelFolderError(
            f"{directory} holds no readable network ({error.strerror}: {model_file.name})."
        ) from None
    expected = metadata.get("model_sha256")
    if expected and hashlib.sha256(model_bytes).hexdigest() != expected:
        raise ModelFolderError(
            f"{model_file} does not match the SHA-256 recorded in its {METADATA_FILE}: the file is "
            "damaged or was replaced without its metadata."
        )
    return model_bytes, metadata


def bundled_model_folders(root=BUNDLED_MODELS_DIR):
    """The bundled networks' folders, the one a fresh install serves (``"default": true`` in its
    metadata) first, the others by name."""
    root = Path(root)
    folders = sorted(path for path in root.iterdir() if is_model_folder(path)) if root.is_dir() else []
    return sorted(folders, key=lambda folder: not read_metadata(folder).get("default"))
