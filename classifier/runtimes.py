"""What can compute a network's forward pass in serving (no imports: settings read this).

"litert-int8" serves: LiteRT with int8 weights, activations quantized per cell as they go
(``classifier.inference._LiteRTForward``). "litert" is the same runtime in float32, "tensorflow"
the traced Keras call.
"""

# Each runtime with what it means for the probabilities, in words an admin can act on; the
# int8 figures were measured on the bundled networks' TEST cells (MODEL_CARD.md).
RUNTIME_DESCRIPTIONS = {
    "litert-int8": "LiteRT with int8 weights (calls within ~0.02 of the float network's "
    "probabilities; on the bundled networks' TEST cells, at most one call in 2,487 differs)",
    "litert": "LiteRT in float32 (the same probabilities as the float network, to 1e-6)",
    "tensorflow": "TensorFlow, the float network itself",
}
RUNTIMES = tuple(RUNTIME_DESCRIPTIONS)
DEFAULT_RUNTIME = "litert-int8"


def quiet_tensorflow_startup(environ):
    """Keep TensorFlow's C++ start-up chatter (oneDNN, CPU features, converter steps) out of a
    command's output unless the operator asked for it; call before TensorFlow is imported."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
