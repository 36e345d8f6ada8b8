import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from classifier.backbones.efficientnet_lite import (
    HEAD_FILTERS,
    WeightMismatch,
    assign_torch_weights,
    efficientnet_lite0,
    imagenet_weights_path,
)
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


# -- the Keras port ------------------------------------------------------------------------------


def striped_image(size):
    """A fixed, busy test picture in [0, 1] (no random generator, so the same on every machine)."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([(i * 3 + j * 5 + c * 7) % 17 / 16 for c in range(3)], -1)[None].astype(np.float32)


@pytest.mark.parametrize("normalization", ["batch", "group"])
def test_trunk_builds_at_96_and_gives_pooled_features(normalization):
    trunk = efficientnet_lite0((96, 96, 3), normalization=normalization)
    features = np.asarray(trunk(np.repeat(striped_image(96), 2, axis=0), training=False))
    assert features.shape == (2, HEAD_FILTERS) and np.isfinite(features).all()
    assert efficientnet_lite0((96, 96, 3), pooling=None).output.shape == (None, 3, 3, HEAD_FILTERS)


def test_network_saves_and_loads_with_keras_alone(tmp_path):
    # A trained version is stored as a .keras file and loaded without this module: the network
    # must be made of Keras's own layers only (stochastic depth included).
    import keras

    trunk = efficientnet_lite0((96, 96, 3), normalization="group")
    network = keras.Model(trunk.input, keras.layers.Dense(4)(trunk.output))
    network.save(tmp_path / "network.keras")
    loaded = keras.saving.load_model(tmp_path / "network.keras")
    image = striped_image(96)
    saved, original = (np.asarray(model(image, training=False)) for model in (loaded, network))
    np.testing.assert_allclose(saved, original, atol=1e-6)


def test_network_has_the_reference_size():
    # 4,694,024: the element count of the reference state dict, batch counters aside.
    assert efficientnet_lite0((96, 96, 3), include_top=True).count_params() == 4_694_024


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization"):
        efficientnet_lite0((96, 96, 3), normalization="layer")


@pytest.fixture(scope="module")
def imagenet_state():
    try:
        path = imagenet_weights_path()
    except FileNotFoundError as missing:
        pytest.skip(f"ImageNet weights not available: {missing}")
    return read_state_dict(path)


@pytest.mark.parametrize("normalization", ["batch", "group"])
def test_imagenet_weights_fill_every_layer(imagenet_state, normalization):
    import keras

    trunk = efficientnet_lite0((96, 96, 3), normalization=normalization)
    assignment = assign_torch_weights(trunk, imagenet_state)

    assert set(assignment.assigned_layers) == {layer.name for layer in trunk.layers if layer.weights}
    left_aside = {key for key in imagenet_state if key.startswith("_fc.") or key.endswith("_tracked")}
    if normalization == "group":
        left_aside |= {key for key in imagenet_state if key.endswith(("running_mean", "running_var"))}
    assert set(assignment.ignored_keys) == left_aside
    stem_norm = trunk.get_layer("stem_norm")
    expected_type = (
        keras.layers.BatchNormalization if normalization == "batch" else keras.layers.GroupNormalization
    )
    assert isinstance(stem_norm, expected_type)
    np.testing.assert_array_equal(stem_norm.gamma.numpy(), imagenet_state["_bn0.weight"])


def test_imagenet_network_answers_as_the_reference_does():
    try:
        network = efficientnet_lite0((96, 96, 3), include_top=True, weights="imagenet")
    except FileNotFoundError as missing:
        pytest.skip(f"ImageNet weights not available: {missing}")
    logits = np.asarray(network(striped_image(96), training=False))[0]
    # The reference (efficientnet_lite_pytorch 0.1.0, torch 2.13.0, eval mode) on the same
    # picture: its five highest logits and their classes.
    np.testing.assert_array_equal(np.argsort(-logits)[:5], [904, 556, 632, 828, 650])
    np.testing.assert_allclose(np.sort(logits)[::-1][:5], [10.1382, 9.0569, 8.966, 6.9247, 6.5415], atol=1e-3)


def test_a_state_dict_that_does_not_fit_is_refused_before_any_layer_is_set(imagenet_state):
    trunk = efficientnet_lite0((96, 96, 3))
    before = [weight.numpy().copy() for weight in trunk.weights]
    missing = {key: value for key, value in imagenet_state.items() if key != "_blocks.7._bn2.running_var"}
    with pytest.raises(WeightMismatch, match="_blocks.7._bn2.running_var"):
        assign_torch_weights(trunk, missing)
    with pytest.raises(WeightMismatch, match="fit no layer"):
        assign_torch_weights(trunk, {**imagenet_state, "_blocks.16._bn0.weight": np.ones(8)})
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, trunk.weights, strict=True))
