import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from classifier.backbones.torch_weights import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    CheckpointError,
    UnsafeCheckpoint,
    read_state_dict,
)

LEGACY_SYSTEM_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}


def legacy_stream(*pickles, storages=()):
    """A legacy torch file: header pickles, the object, the storage keys, then raw storages."""
    header = [LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, LEGACY_SYSTEM_INFO]
    parts = [pickle.dumps(value, protocol=2) for value in header] + list(pickles)
    parts.append(pickle.dumps([key for key, _ in storages], protocol=2))
    for _, array in storages:
        parts += [struct.pack("<q", array.size), array.tobytes()]
    return b"".join(parts)


def zip_archive(data_pkl, storages=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, array in storages:
            archive.writestr(f"archive/data/{key}", array.tobytes())
    return buffer.getvalue()


# -- the allow-list ------------------------------------------------------------------------------


class RunsAShellCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def refused_files(marker):
    command = f"touch {marker}"
    shell = pickle.dumps(RunsAShellCommand(command), protocol=2)
    in_a_state_dict = pickle.dumps(collections.OrderedDict(weight=RunsAShellCommand(command)), protocol=2)
    # Protocol 0's INST opcode names its class another way than GLOBAL does.
    inst = f"(S'{command}'\nios\nsystem\n.".encode()
    return {
        "legacy object": legacy_stream(shell),
        "legacy header": shell,
        "legacy state dict value": legacy_stream(in_a_state_dict),
        "legacy INST opcode": legacy_stream(inst),
        "zip data.pkl": zip_archive(shell),
        "zip state dict value": zip_archive(in_a_state_dict),
    }


@pytest.mark.parametrize("case", list(refused_files("x")))
def test_reader_refuses_a_global_outside_the_allow_list_and_runs_nothing(tmp_path, case):
    marker = tmp_path / "ran"
    path = tmp_path / "weights.pth"
    path.write_bytes(refused_files(marker)[case])
    with pytest.raises(UnsafeCheckpoint) as refusal:
        read_state_dict(path)
    assert refusal.value.global_name in ("os.system", "posix.system")
    assert "system" in str(refusal.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])  # 4 names globals with STACK_GLOBAL instead of GLOBAL
def test_reader_refuses_builtins_too(tmp_path, protocol):
    path = tmp_path / "weights.pth"
    path.write_bytes(zip_archive(pickle.dumps(collections.OrderedDict(w=getattr), protocol=protocol)))
    # Protocol 2 writes Python 2's module name.
    with pytest.raises(UnsafeCheckpoint, match=r"(builtins|__builtin__)\.getattr"):
        read_state_dict(path)


def test_reader_names_what_it_cannot_read(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="neither a torch zip checkpoint nor a legacy"):
        read_state_dict(path)
    path.write_bytes(legacy_stream()[:40])
    with pytest.raises(CheckpointError):
        read_state_dict(path)


# -- torch-format files made by hand -------------------------------------------------------------


@pytest.fixture
def torch_stand_in(monkeypatch):
    """Modules named ``torch`` and ``torch._utils`` whose globals pickle under torch's own names.

    The pickles written with them are the ones torch writes: the reader under test never imports
    them, and real torch is not needed.
    """
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("a stand-in is only ever pickled")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        storage_types[name] = type(name, (), {"__module__": "torch"})
        setattr(torch, name, storage_types[name])
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, storage_types=storage_types)


class Storage:
    def __init__(self, key, type_name, array):
        self.key, self.type_name, self.array = key, type_name, array


class Tensor:
    def __init__(self, rebuild, storage, offset, size, stride):
        self.args = (rebuild, (storage, offset, size, stride, False, collections.OrderedDict()))

    def __reduce__(self):
        return self.args


def torch_pickle(obj, stand_in, legacy):
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)

    def persistent_id(value):
        if not isinstance(value, Storage):
            return None
        saved = ("storage", stand_in.storage_types[value.type_name], value.key, "cpu", value.array.size)
        return saved + (None,) if legacy else saved

    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return buffer.getvalue()


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reader_reads_a_hand_made_torch_file_into_the_right_arrays(tmp_path, torch_stand_in, layout):
    rebuild = torch_stand_in.rebuild
    floats = Storage("0", "FloatStorage", np.arange(10, dtype=np.float32) * 0.5)
    counter = Storage("1", "LongStorage", np.array([7, 123], dtype=np.int64))
    halves = Storage("2", "HalfStorage", np.array([1.5, -2.25, 3.0], dtype=np.float16))
    state = collections.OrderedDict(
        [
            ("conv.weight", Tensor(rebuild, floats, 0, (2, 3), (3, 1))),
            # A transposed view into the same storage, from its third element on.
            ("conv.weight_t", Tensor(rebuild, floats, 2, (3, 2), (1, 3))),
            ("bn.num_batches_tracked", Tensor(rebuild, counter, 1, (), ())),
            ("half", Tensor(rebuild, halves, 0, (3,), (1,))),
        ]
    )
    storages = [(s.key, s.array) for s in (floats, counter, halves)]
    data = torch_pickle(state, torch_stand_in, legacy=layout == "legacy")
    path = tmp_path / "weights.pth"
    path.write_bytes(
        legacy_stream(data, storages=storages) if layout == "legacy" else zip_archive(data, storages)
    )

    read = read_state_dict(path)

    assert list(read) == list(state)
    np.testing.assert_array_equal(read["conv.weight"], [[0, 0.5, 1], [1.5, 2, 2.5]])
    np.testing.assert_array_equal(read["conv.weight_t"], [[1, 2.5], [1.5, 3], [2, 3.5]])
    assert read["conv.weight"].dtype == np.float32 and read["half"].dtype == np.float16
    assert read["bn.num_batches_tracked"].shape == () and read["bn.num_batches_tracked"] == 123
    np.testing.assert_array_equal(read["half"], [1.5, -2.25, 3.0])
    read["conv.weight"][0, 0] = 99  # arrays own their memory: one tensor's edit leaves another's
    assert read["conv.weight_t"][0, 0] == 1


def test_reader_refuses_a_tensor_reaching_past_its_storage(tmp_path, torch_stand_in):
    floats = Storage("0", "FloatStorage", np.zeros(4, dtype=np.float32))
    data = torch_pickle({"w": Tensor(torch_stand_in.rebuild, floats, 2, (3,), (1,))}, torch_stand_in, False)
    path = tmp_path / "weights.pth"
    path.write_bytes(zip_archive(data, [("0", floats.array)]))
    with pytest.raises(CheckpointError, match="past the end"):
        read_state_dict(path)
