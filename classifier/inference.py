"""Loading a trained network and calling it on context windows: calibrated probabilities and
Grad-CAM heatmaps. TensorFlow is imported only when a model is loaded, so the web process can
import this module for free.
"""

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from classifier import calibration, model_folder, ood
from classifier.architectures import GRADCAM_LAYER
from classifier.preparation import input_shape, prepare_batch, prepare_uint8
from classifier.runtimes import DEFAULT_RUNTIME, RUNTIMES
from classifier.serving_graph import litert_graph

logger = logging.getLogger(__name__)

def load_keras_bytes(model_bytes):
    """A Keras network from the bytes of its .keras file, uncompiled. Raises ValueError where the
    bytes are no Keras archive."""
    if not zipfile.is_zipfile(io.BytesIO(model_bytes)):
        # Keras would report the temporary copy below as "File not found", naming a path in /tmp.
        raise ValueError("the network file is damaged or is no Keras archive (.keras is a zip file)")
    import keras

    # Keras loads .keras archives from a path only; the temp file lives just long enough.
    fd, path = tempfile.mkstemp(suffix=".keras")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(model_bytes)
        return keras.models.load_model(path, compile=False)
    finally:
        os.unlink(path)


def _cpu_count():
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


# Converting a network to LiteRT takes 1-2 s, and the same network comes back to be converted: a
# worker that keeps two versions loaded reloads a third it served before, and a training serves the
# network it trained once to fit the review flag and again to measure TEST. Flatbuffers are kept
# by the network's content (its graph and weights), so another network never gets one.
CONVERTED_NETWORKS_KEPT = 8
_converted = OrderedDict()  # (content fingerprint, int8 weights) -> flatbuffer, most recent last
_converted_lock = threading.Lock()


def network_fingerprint(model):
    """A SHA-256 of a Keras network's graph and every weight (shape, type and bytes), or None where
    its graph cannot be written out as JSON."""
    try:
        digest = hashlib.sha256(model.to_json().encode())
    except Exception:  # a layer Keras cannot serialise: such a network is converted every time
        return None
    for weight in model.get_weights():
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.dtype.str}{weight.shape}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()


def _litert_flatbuffer(model, int8_weights):
    """``model`` converted to a LiteRT flatbuffer, or the one converted before from the same
    network."""
    fingerprint = network_fingerprint(model)
    key = (fingerprint, bool(int8_weights))
    with _converted_lock:
        if fingerprint is not None and key in _converted:
            _converted.move_to_end(key)
            return _converted[key]
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(litert_graph(model))
    if int8_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no sample data: dynamic range
    # Keras prints a summary of the graph it exports on the way, and TensorFlow logs where it
    # wrote it: nothing a worker's log needs.
    tensorflow_log = logging.getLogger("tensorflow")
    level = tensorflow_log.level
    tensorflow_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            flatbuffer = converter.convert()
    finally:
        tensorflow_log.setLevel(level)
    if fingerprint is not None:
        with _converted_lock:
            _converted[key] = flatbuffer
            while len(_converted) > CONVERTED_NETWORKS_KEPT:
                _converted.popitem(last=False)
    return flatbuffer


# A batch of 64 cells' activation maps (the stem's alone 25 MB in float32) outgrows the cache
# between layers; invoked 16 cells at a time the network ran 33 -> 25 ms per 64 cells on a 2-core
# AMD EPYC, each cell's outputs bit for bit the same (int8 activations are quantized per cell).
CELLS_PER_INVOKE = 16


class _LiteRTForward:
    """The network converted once to a LiteRT flatbuffer and run by its XNNPACK CPU kernels.

    On this project's 2-core AVX2 machine the traced TensorFlow call managed ~980 cells/s at
    batch 64 and 3-5 ms at batch 1 (its per-call overhead); LiteRT ~1,360 cells/s and 0.6 ms, its
    outputs within 3e-7 of Keras's. A batch is padded up to a power of two so that each
    interpreter, which plans its memory for one batch size, is made once per size and reused.

    ``int8_weights`` stores the weights as int8 (dynamic-range quantization) and XNNPACK then
    quantizes each cell's activations on the fly, per cell, so a cell's result does not depend on
    its batchmates. LeukoNet's forward pass ran 4x faster so (2,090 -> 8,370 cells/s at batch 64
    on a 2-core AVX-512 host); on the 2,487 TEST cells its probabilities moved by at most 0.016
    and one call of 2,487 changed.
    """

    def __init__(self, model, input_shape, int8_weights=False):
        """``model``'s outputs are returned as a list, in its order."""
        from ai_edge_litert.interpreter import Interpreter

        self._flatbuffer = _litert_flatbuffer(model, int8_weights)
        self.runtime = "litert-int8" if int8_weights else "litert"
        self._interpreter_class = Interpreter
        self._input_shape = tuple(input_shape)
        self._threads = _cpu_count()
        self._interpreters = {}
        # An interpreter holds its tensors between set and get: one caller at a time.
        self._lock = threading.Lock()

    def _interpreter(self, size):
        """(interpreter, input index, output indices) planned for batches of ``size``."""
        entry = self._interpreters.get(size)
        if entry is None:
            interpreter = self._interpreter_class(model_content=self._flatbuffer, num_threads=self._threads)
            input_index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(input_index, [size, *self._input_shape])
            interpreter.allocate_tensors()
            entry = (interpreter, input_index, _output_indices(interpreter))
            self._interpreters[size] = entry
        return entry

    def __call__(self, batch):
        """The network's outputs for a float32 batch, run at most ``CELLS_PER_INVOKE`` cells at a
        time."""
        parts = [self._invoke(batch[start : start + CELLS_PER_INVOKE])
                 for start in range(0, max(1, len(batch)), CELLS_PER_INVOKE)]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    def _invoke(self, batch):
        count = len(batch)
        size = 1 << max(0, count - 1).bit_length()
        if size != count:
            padded = np.zeros((size, *self._input_shape), np.float32)
            padded[:count] = batch
            batch = padded
        with self._lock:
            interpreter, input_index, output_indices = self._interpreter(size)
            interpreter.set_tensor(input_index, batch)
            interpreter.invoke()
            outputs = [interpreter.get_tensor(index)[:count] for index in output_indices]
        return outputs


def _output_indices(interpreter):
    """The tensor indices of a converted network's outputs in the Keras model's order.

    get_output_details() lists a two-output network's outputs in the flatbuffer's own order (the
    score before the probabilities, as converted here); the signature names them output_0,
    output_1, ... in the order of the Keras model's outputs.
    """
    outputs = interpreter.get_signature_runner().get_output_details()
    return [outputs[name]["index"] for name in sorted(outputs, key=lambda name: int(name.rsplit("_", 1)[1]))]


def _as_float_batch(inputs):
    """Prepared inputs as the float32 [0, 1] batch networks take (uint8 scaled as prepare_batch
    scales it, float passed through)."""
    inputs = np.asarray(inputs)
    if inputs.dtype == np.uint8:
        return inputs.astype(np.float32) / np.float32(255.0)
    return inputs


@dataclass(frozen=True)
class CellCalls:
    """A network's calls on a batch of cells, and how far each cell lies from what it was trained on."""

    probabilities: np.ndarray  # (N, C) calibrated, class_names order
    # (N,) classifier.ood scores, above 1 unfamiliar; None for a network trained without them
    ood_scores: np.ndarray | None

    @property
    def confidence(self):
        """(N,) the calibrated probability of each row's call."""
        if len(self.probabilities) == 0:
            return np.zeros(0)
        return self.probabilities.max(axis=1)

    def needs_review(self, confidence_threshold):
        """(N,) bool: under the site's confidence threshold, or unfamiliar to the network."""
        return ood.needs_review(self.confidence, self.ood_scores, confidence_threshold)


class CellClassifier:
    """A trained network plus what it needs to be used: classes, input spec, temperature, and the
    out-of-distribution score its weights carry, if any (classifier.ood).

    ``runtime`` "litert-int8" (the default) serves the network through LiteRT with int8 weights,
    "litert" through LiteRT in float32; both fall back to the traced TensorFlow call, with a
    warning, where a network cannot be converted. "tensorflow" always uses TensorFlow. Grad-CAM
    needs gradients and always runs on the float Keras model.
    """

    def __init__(self, model, metadata, runtime=DEFAULT_RUNTIME):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r} (expected one of {', '.join(RUNTIMES)})")
        self.runtime = runtime
        self.model = model
        self.metadata = dict(metadata)
        self.class_names = tuple(metadata["class_names"])
        self.task = metadata["task"]
        self.input_spec = dict(metadata["input_spec"])
        self.temperature = float(metadata.get("temperature", 1.0))
        self.architecture = metadata.get("architecture", "")
        self.gradcam_layer = metadata.get("gradcam_layer", GRADCAM_LAYER)
        self.ood_head = ood.OodHead.from_model(model)
        self._gradcam_call = None
        self._call = None
        self._serving_runtime = None

    @classmethod
    def from_bytes(cls, model_bytes: bytes, metadata: dict, runtime=DEFAULT_RUNTIME):
        expected = metadata.get("model_sha256")
        if expected and hashlib.sha256(model_bytes).hexdigest() != expected:
            raise ValueError("model bytes do not match the sha256 recorded in the metadata")
        return cls(load_keras_bytes(bytes(model_bytes)), metadata, runtime)

    @classmethod
    def from_directory(cls, path, runtime=DEFAULT_RUNTIME):
        """A saved model folder (classifier.model_folder, which checks the bytes' SHA-256)."""
        model_bytes, metadata = model_folder.read_model_folder(path)
        try:
            model = load_keras_bytes(model_bytes)
        except ValueError as error:
            raise model_folder.ModelFolderError(f"{path}: {error}") from None
        return cls(model, metadata, runtime)

    @property
    def serving_runtime(self):
        """What computes the network (built here if not yet): ``runtime``, or "tensorflow" where
        LiteRT fell back."""
        self._forward()
        return self._serving_runtime

    @property
    def input_shape(self):
        return input_shape(self.input_spec)

    @property
    def has_ood_score(self):
        return self.ood_head is not None

    def _forward(self):
        """A function from a float32 batch to (the network's output as a NumPy array, its
        out-of-distribution scores (N,) or None)."""
        if self._call is None and self.runtime.startswith("litert"):
            try:
                self._call = self._litert_call()
            except Exception as exc:  # the converter raises many kinds; TensorFlow still serves
                logger.warning("LiteRT cannot run this network (%s); serving it with TensorFlow.", exc)
        if self._call is None:
            self._call, self._serving_runtime = self._traced_call(), "tensorflow"
        return self._call

    def _litert_call(self):
        """The network through LiteRT; its out-of-distribution score, where it has one, computed by
        a second, float32 interpreter from the penultimate features (classifier.ood says why)."""
        import keras

        probabilities, features = ood.served_tensors(self.model)
        int8 = self.runtime == "litert-int8"
        if features is None:
            network = _LiteRTForward(self.model, self.input_shape, int8_weights=int8)
            self._serving_runtime = network.runtime
            return lambda batch: (network(batch)[0], None)
        served = keras.Model(self.model.input, [probabilities, features], name=self.model.name)
        network = _LiteRTForward(served, self.input_shape, int8_weights=int8)
        score = _LiteRTForward(ood.score_network(self.ood_head), (self.ood_head.kernel.shape[0],))
        self._serving_runtime = network.runtime

        def call(batch):
            output, penultimate = network(batch)
            return output, score(penultimate)[0][:, 0]

        return call

    def _traced_call(self):
        """model(batch, training=False) as one traced graph for any batch size: eager calls
        dispatch op by op, which cost several times the arithmetic at serving batch sizes."""
        import tensorflow as tf

        spec = tf.TensorSpec([None, *self.input_shape], tf.float32)
        model = self.model
        traced = tf.function(lambda x: tf.nest.flatten(model(x, training=False)), input_signature=[spec])

        def call(batch):
            outputs = [output.numpy() for output in traced(batch)]
            return outputs[0], (outputs[1][:, 0] if len(outputs) > 1 else None)

        return call

    def _raw(self, inputs, batch_size=64):
        """(the network's own outputs (N, 1 or C), out-of-distribution scores (N,) or None)."""
        outputs, scores = [], []
        forward = self._forward()
        for start in range(0, len(inputs), batch_size):
            batch = np.ascontiguousarray(inputs[start : start + batch_size], dtype=np.float32)
            output, score = forward(batch)
            outputs.append(np.asarray(output, dtype=np.float64))
            if score is not None:
                scores.append(np.asarray(score, dtype=np.float64))
        if not outputs:
            width = max(1, len(self.class_names) if len(self.class_names) > 2 else 1)
            return np.zeros((0, width)), (None if self.ood_head is None else np.zeros(0))
        return np.concatenate(outputs), (np.concatenate(scores) if scores else None)

    @staticmethod
    def _logits_of(raw):
        if raw.shape[1] == 1:
            return calibration.sigmoid_to_logits(raw[:, 0])
        return calibration.logits_from_probabilities(raw)

    def logits(self, inputs, batch_size=64):
        """Uncalibrated logits (N, C) from prepared float inputs (up to a per-row constant)."""
        return self._logits_of(self._raw(inputs, batch_size)[0])

    def classify_inputs(self, inputs, calibrated=True, batch_size=64):
        """CellCalls from prepared inputs: ``network_inputs`` (uint8) or ``prepare_batch``
        (float32 in [0, 1]) output."""
        if len(inputs) == 0:
            empty_scores = None if self.ood_head is None else np.zeros(0)
            return CellCalls(probabilities=np.zeros((0, len(self.class_names))), ood_scores=empty_scores)
        temperature = self.temperature if calibrated else 1.0
        raw, scores = self._raw(_as_float_batch(inputs), batch_size)
        probabilities = calibration.softmax(self._logits_of(raw), temperature)
        return CellCalls(probabilities=probabilities, ood_scores=scores)

    def classify(self, windows, calibrated=True, batch_size=64):
        """CellCalls for context windows (uint8 240x320x3 each): calibrated probabilities and each
        cell's out-of-distribution score, from which ``needs_review`` decides the review flag."""
        if len(windows) == 0:
            return self.classify_inputs([], calibrated, batch_size)
        return self.classify_inputs(prepare_batch(windows, self.input_spec), calibrated, batch_size)

    def predict_inputs(self, inputs, calibrated=True, batch_size=64):
        """(N, C) probabilities in class_names order from prepared inputs (classify_inputs's)."""
        return self.classify_inputs(inputs, calibrated, batch_size).probabilities

    def predict(self, windows, calibrated=True, batch_size=64):
        """Calibrated (N, C) probabilities for context windows (classify's, without the scores)."""
        return self.classify(windows, calibrated, batch_size).probabilities

    def network_inputs(self, windows):
        """What the network sees of each context window, as uint8 (N, H, W, 3)."""
        return prepare_uint8(windows, self.input_spec)

    def heatmaps(self, inputs, class_indices=None):
        """Grad-CAM heat maps (float32 (N, H, W) at network input size, each in [0, 1]) of the last
        conv layer for prepared inputs (``network_inputs`` or ``prepare_batch`` output), row i
        explaining class ``class_indices[i]`` (default: the float Keras network's own call)."""
        inputs = _as_float_batch(inputs)
        height, width = self.input_shape[:2]
        if class_indices is None:
            class_indices = np.full(len(inputs), -1)
        cams = np.zeros((len(inputs), height, width), np.float32)
        gradcam = self._gradcam()
        for row, class_index in enumerate(class_indices):
            # One cell per call: a cell's heat map then does not depend on its batchmates, and
            # equals, bit for bit, what the eager per-cell Grad-CAM gave (batched, the kernels
            # round differently, by ~3e-7). Traced, a LeukoNet cell took 3 ms against 73 ms eager
            # on a 2-core EPYC.
            cam = gradcam(inputs[row : row + 1], np.array([class_index], np.int32)).numpy()[0]
            cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            cam = np.maximum(cam, 0)
            peak = float(cam.max())
            cams[row] = cam / peak if peak > 0 else cam
        return cams

    def _gradcam(self):
        """Traced (inputs, class indices) -> class activation maps at the Grad-CAM layer's size; a
        negative index stands for the network's own call."""
        if self._gradcam_call is None:
            import keras
            import tensorflow as tf

            layer = self.model.get_layer(self.gradcam_layer)
            probabilities, _ = ood.served_tensors(self.model)
            network = keras.Model(self.model.inputs, [layer.output, probabilities])

            def class_activation_maps(batch, class_indices):
                with tf.GradientTape() as tape:
                    features, output = network(batch, training=False)
                    if output.shape[-1] == 1:
                        p = tf.clip_by_value(output[:, 0], 1e-7, 1 - 1e-7)
                        own_call = tf.cast(p >= 0.5, tf.int32)
                        positive = tf.where(class_indices < 0, own_call, class_indices) == 1
                        logit = tf.math.log(p) - tf.math.log(1 - p)
                        score = tf.where(positive, logit, -logit)
                    else:
                        own_call = tf.argmax(output, axis=-1, output_type=tf.int32)
                        chosen = tf.where(class_indices < 0, own_call, class_indices)
                        picked = tf.gather(output, chosen, batch_dims=1)
                        score = tf.math.log(tf.clip_by_value(picked, 1e-7, 1.0))
                grads = tape.gradient(score, features)
                weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
                return tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))

            self._gradcam_call = tf.function(
                class_activation_maps,
                input_signature=[
                    tf.TensorSpec([None, *self.input_shape], tf.float32),
                    tf.TensorSpec([None], tf.int32),
                ],
            )
        return self._gradcam_call

    @property
    def size_bytes(self):
        return int(self.metadata.get("size_bytes", 0))
