"""Networks by name. Each takes float32 RGB in [0, 1] of its input_spec's size.

- ``paper``: the published network, layer for layer: the whole field at 120x160.
- ``leukonet``: a small batch-normalised CNN that sees the whole cell with a ring of red cells
  around it (a 96x96 view of the central 160x160 of the context window, white-balanced on the
  background, stain-normalised on the red cells: ``classifier.preparation``), trained with
  augmentation. Monocytes measure ~120 reference px across (BCCD boxes, 90th percentile 142): a
  tighter view cuts off the cytoplasm that tells them from neutrophils, and the red cells around
  a leukocyte are the ruler for its size.

- ``leukonet-gn``: LeukoNet with group norm in place of batch norm, whose statistics are those of
  each image rather than of the training batches: batch statistics learnt in one lab are reported
  to hurt white-cell classifiers in the next (Tsutsui et al. 2023).
- ``mixstyle`` (LeukoNet, training only): each image's early feature maps take on, at random, a
  blend of their own channel statistics and another image's of the batch (Zhou et al. 2021,
  "Domain generalization with MixStyle"). A map's means and spreads are what a lab's stain and
  camera change first; a network that cannot count on them must read shape. The layers hold no
  weights and do nothing in inference: the stored network is built without them.
- ``effnet-lite0``: the EfficientNet-Lite0 trunk (classifier.backbones.efficientnet_lite), set
  from its ImageNet weights when a run builds it for training, with a small head. A trained
  version carries its own weights; serving never reads ImageNet's.

All name their last convolutional activation ``gradcam_target`` for Grad-CAM, and keep the
final activation as a separate layer (``probabilities``) so logits are one layer below.
"""

import functools

from classifier.backbones.efficientnet_lite import efficientnet_lite0
from classifier.errors import TrainingDataError
from classifier.labels import TASK_CLASSES

DEFAULT_INPUT_SPEC = {
    "paper": {"height": 120, "width": 160, "mode": "field"},
    "leukonet": {
        "height": 96,
        "width": 96,
        "mode": "cell",
        "crop": 160,
        "white_balance": True,
        "stain_normalise": True,
        # The slide beyond the cell's reach blanked: the network learns the cell, not the red
        # cells and stain around it (0.874 against 0.864 over five group splits; model card).
        "mask_radius": 65,
    },
}
# The eight-type network sees the same 160x160 view at 128x128: PBC's analyser photographs a cell
# twice as large as BCCD's camera, and at 96x96 the chromatin that tells an immature granulocyte,
# a monocyte and an erythroblast apart was averaged away (PBC TEST 93.3% -> 95.7%; model card).
DEFAULT_INPUT_SPEC["leukonet-gn"] = {**DEFAULT_INPUT_SPEC["leukonet"], "height": 128, "width": 128}
# What LeukoNet sees, at the smallest size the trunk's five stride-2 stages leave a 3x3 map of.
DEFAULT_INPUT_SPEC["effnet-lite0"] = dict(DEFAULT_INPUT_SPEC["leukonet"])
GRADCAM_LAYER = "gradcam_target"
# Group norm's groups in LeukoNet: every one of its filter counts is a multiple of 8.
LEUKONET_NORM_GROUPS = 8
# MixStyle's blend weight ~ Beta(a, a), as its authors set it: most blends stay near one image.
MIXSTYLE_ALPHA = 0.1
MIXSTYLE_ARCHITECTURES = ("leukonet", "leukonet-gn")


def _mixstyle_layer(keras, probability, name):
    """A layer that, in training and for a batch drawn with ``probability``, gives each image's
    channels the mean and spread of a blend of its own and another image's (gradients do not flow
    through the statistics, as in the paper); identity otherwise."""
    from keras import ops

    class MixStyle(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(name=name, **kwargs)
            self.seeds = keras.random.SeedGenerator()

        def call(self, x, training=None):
            if not training:
                return x
            mean = ops.stop_gradient(ops.mean(x, axis=(1, 2), keepdims=True))
            spread = ops.stop_gradient(ops.sqrt(ops.var(x, axis=(1, 2), keepdims=True) + 1e-6))
            batch = ops.shape(x)[0]
            weight = keras.random.beta((batch, 1, 1, 1), MIXSTYLE_ALPHA, MIXSTYLE_ALPHA, seed=self.seeds)
            other = keras.random.shuffle(ops.arange(batch), seed=self.seeds)
            mixed_mean = weight * mean + (1.0 - weight) * ops.take(mean, other, axis=0)
            mixed_spread = weight * spread + (1.0 - weight) * ops.take(spread, other, axis=0)
            mixed = (x - mean) / spread * mixed_spread + mixed_mean
            applies = keras.random.uniform((), seed=self.seeds) < probability
            return ops.where(applies, mixed, x)

    return MixStyle()


def _head(keras, x, task, n_classes):
    layers = keras.layers
    if task == "binary" and n_classes == 2:
        x = layers.Dense(1, name="logits")(x)
        return layers.Activation("sigmoid", name="probabilities")(x)
    x = layers.Dense(n_classes, name="logits")(x)
    return layers.Activation("softmax", name="probabilities")(x)


def build_paper(keras, input_spec, task, n_classes, width=1.0):
    if width != 1.0:
        raise TrainingDataError("the paper network is the published one: its widths are fixed")
    layers = keras.layers
    inputs = keras.Input(shape=(input_spec["height"], input_spec["width"], 3), name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, name="conv3")(x)
    x = layers.Activation("relu", name=GRADCAM_LAYER)(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _head(keras, x, task, n_classes), name="paper")


def _conv_bn(layers, x, filters, name, activation_name=None, strides=1, norm="batch"):
    x = layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    if norm == "batch":
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    else:
        x = layers.GroupNormalization(groups=LEUKONET_NORM_GROUPS, name=f"{name}_gn")(x)
    return layers.Activation("relu", name=activation_name or f"{name}_relu")(x)


def build_leukonet(keras, input_spec, task, n_classes, dropout=0.3, width=1.0, norm="batch", mixstyle=0.0):
    layers = keras.layers
    conv = functools.partial(_conv_bn, layers, norm=norm)

    def restyle(x, name):
        return _mixstyle_layer(keras, mixstyle, name)(x) if mixstyle > 0 else x

    def filters(count):
        # Multiples of 8 keep the convolution kernels on their fast paths; width 1 is the recipe.
        return max(8, int(round(count * width / 8.0)) * 8)

    inputs = keras.Input(shape=(input_spec["height"], input_spec["width"], 3), name="image")
    # Centre the [0, 1] input; the stem's batch norm takes care of the rest.
    x = layers.Rescaling(2.0, offset=-1.0, name="centre")(inputs)
    # A strided stem: full-resolution conv + batch norm layers cost 5-10x more per epoch on this
    # CPU (measured 1.2 s vs 0.24 s per batch of 64) for the same depth.
    x = restyle(conv(x, filters(24), "stem", strides=2), "stem_mixstyle")
    x = layers.MaxPooling2D(2)(x)
    # Widths sized for serving: with preparation (crop, resize, white balance, stain: ~0.3 ms)
    # the whole predict() must stay above 1,000 cells/s on two cores; this network alone ran
    # ~1,900 cells/s at batch 64 there in float32, the earlier 0.95 M-parameter one ~1,000.
    # Served with int8 weights it runs ~4x faster, hence ``width`` for wider experiments.
    x = restyle(conv(x, filters(48), "b1a"), "b1_mixstyle")
    x = layers.MaxPooling2D(2)(x)
    x = conv(x, filters(96), "b2a")
    x = restyle(conv(x, filters(96), "b2b"), "b2_mixstyle")
    x = layers.MaxPooling2D(2)(x)
    x = conv(x, filters(160), "b3a")
    x = conv(x, filters(192), "b3b", activation_name=GRADCAM_LAYER)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    name = "leukonet" if norm == "batch" else "leukonet_gn"
    return keras.Model(inputs, _head(keras, x, task, n_classes), name=name)


def build_leukonet_gn(keras, input_spec, task, n_classes, width=1.0, mixstyle=0.0):
    return build_leukonet(keras, input_spec, task, n_classes, width=width, norm="group", mixstyle=mixstyle)


def build_effnet_lite0(keras, input_spec, task, n_classes, width=1.0, pretrained=False,
                       freeze_trunk=False):
    """The EfficientNet-Lite0 trunk, ImageNet-initialised when ``pretrained`` (a run building it
    to train), a dropout and the task's head on its pooled features; ``freeze_trunk`` leaves the
    trunk's weights (batch-norm statistics included) as they start and trains the head alone."""
    if width != 1.0:
        raise TrainingDataError("effnet-lite0 is ImageNet's network: its widths are fixed")
    layers = keras.layers
    trunk = efficientnet_lite0(
        (input_spec["height"], input_spec["width"], 3),
        weights="imagenet" if pretrained else None,
        pooling=None,
    )
    # A frozen batch-norm layer also normalises with its stored statistics, in training as in use.
    trunk.trainable = not freeze_trunk
    x = layers.Activation("linear", name=GRADCAM_LAYER)(trunk.output)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(trunk.input, _head(keras, x, task, n_classes), name="effnet_lite0")


BUILDERS = {
    "paper": build_paper,
    "leukonet": build_leukonet,
    "leukonet-gn": build_leukonet_gn,
    "effnet-lite0": build_effnet_lite0,
}
# Those that start from weights learnt elsewhere when built for training.
PRETRAINED = {"effnet-lite0"}


def frozen_trunk_refusal(name):
    """Why the network ``name`` cannot keep its trunk frozen, or None where it can."""
    if name in PRETRAINED:
        return None
    return (f"{name} starts from random weights: only a network that starts from ImageNet's "
            f"({', '.join(sorted(PRETRAINED))}) has a trunk worth freezing")


def mixstyle_refusal(name):
    """Why the network ``name`` cannot train with MixStyle, or None where it can."""
    if name in MIXSTYLE_ARCHITECTURES:
        return None
    placed = ", ".join(MIXSTYLE_ARCHITECTURES)
    return f"MixStyle is placed in LeukoNet's early stages ({placed}), not in {name}"


def build_model(name, task, input_spec=None, n_classes=None, width=1.0, pretrained=False,
                freeze_trunk=False, mixstyle=0.0):
    """A fresh, uncompiled Keras model; ``width`` scales LeukoNet's filter counts; ``pretrained``
    (a run building it to train) sets a network in PRETRAINED from the weights it starts from, and
    ``freeze_trunk`` keeps that trunk as it starts (a recipe allows it for those alone);
    ``mixstyle`` (a run building LeukoNet to train) the share of batches MixStyle restyles. The
    training recipe (classifier.training.recipe) says which architectures and tasks there are."""
    import keras

    from classifier.training.recipe import check_architecture, check_task

    check_architecture(name)
    check_task(task)
    spec = dict(input_spec or DEFAULT_INPUT_SPEC[name])
    n_classes = n_classes or len(TASK_CLASSES[task])
    if not width > 0:
        raise TrainingDataError(f"width must be a positive number, got {width}")
    options = {"pretrained": True} if pretrained and name in PRETRAINED else {}
    if freeze_trunk:
        if refusal := frozen_trunk_refusal(name):
            raise TrainingDataError(refusal)
        options["freeze_trunk"] = True
    if mixstyle:
        if refusal := mixstyle_refusal(name):
            raise TrainingDataError(refusal)
        options["mixstyle"] = float(mixstyle)
    return BUILDERS[name](keras, spec, task, n_classes, width=float(width), **options)
