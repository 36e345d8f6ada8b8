"""What can compute a network's forward pass in serving (no imports: settings read this).

"litert-int8" serves: LiteRT with int8 weights, activations quantized per cell as they go
(``classifier.inference._LiteRTForward``). "litert" is the same runtime in float32, "tensorflow"
the traced Keras call.
"""

RUNTIMES = ("litert-int8", "litert", "tensorflow")
DEFAULT_RUNTIME = "litert-int8"
