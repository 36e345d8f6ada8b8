"""The graph LiteRT converts: group normalisation rewritten in 4-D operations computes what
Keras's own layer computes, with the trained weights, and leaves other networks as they are."""

import numpy as np

from classifier.architectures import build_model
from classifier.serving_graph import litert_graph


def group_normalised_network():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 10, 3))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras.layers.GroupNormalization(groups=4, name="gn_a")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(24, 3, strides=2, padding="same")(x)
    x = keras.layers.GroupNormalization(groups=8, epsilon=1e-5, name="gn_b")(x)
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for name in ("gn_a", "gn_b"):  # trained scales and shifts, not the ones and zeros of a new layer
        layer = model.get_layer(name)
        layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) if "gamma" in w.path
                           else rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.weights])
    return model


def test_moment_group_norm_computes_what_the_keras_layer_does():
    import keras

    model = group_normalised_network()
    rewritten = litert_graph(model)
    assert not any(isinstance(layer, keras.layers.GroupNormalization) for layer in rewritten.layers)
    assert {layer.name for layer in rewritten.layers} >= {"gn_a_moments", "gn_b_moments"}
    rng = np.random.default_rng(1)
    # Maps whose mean is large against their spread, where E[x^2] - E[x]^2 would lose the variance.
    batch = (40.0 + rng.normal(0, 0.05, (6, 12, 10, 3))).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rewritten(batch)), np.asarray(model(batch)), rtol=1e-4, atol=1e-6)
    plain = rng.uniform(0, 1, (6, 12, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rewritten(plain)), np.asarray(model(plain)), rtol=1e-4, atol=1e-6)
    # The stock network keeps its layers: the rewrite is for conversion only.
    assert sum(isinstance(layer, keras.layers.GroupNormalization) for layer in model.layers) == 2


def test_a_network_without_group_normalisation_is_converted_as_it_is():
    model = build_model("leukonet", "4class")
    assert litert_graph(model) is model
