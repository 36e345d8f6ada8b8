import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from classifier import inference
from classifier.architectures import DEFAULT_INPUT_SPEC, build_model
from classifier.inference import CellClassifier
from classifier.labels import FOUR_CLASSES, TASK_CLASSES
from classifier.model_folder import BUNDLED_MODELS_DIR, METADATA_FILE, MODEL_FILE, is_model_folder
from classifier.preparation import prepare_batch, prepare_window
from classifier.rendering import decode_rgb
from classifier.training import model_to_bytes
from tests.classifier.drawn_fields import draw_field
from tests.conftest import require_dataset

ROOT = Path(__file__).resolve().parents[2]


def make_classifier(architecture, task, temperature=1.5, runtime="litert-int8"):
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(architecture, task)
    metadata = {
        "architecture": architecture,
        "task": task,
        "class_names": list(TASK_CLASSES[task]),
        "input_spec": DEFAULT_INPUT_SPEC[architecture],
        "temperature": temperature,
    }
    return CellClassifier.from_bytes(model_to_bytes(model), metadata, runtime)


def window(seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((240, 320, 3), (225, 215, 220), np.uint8)
    for _ in range(10):
        centre = (int(rng.integers(0, 320)), int(rng.integers(0, 240)))
        cv2.circle(image, centre, 24, (215, 150, 150), -1)
    cv2.circle(image, (160, 120), 30, (200, 180, 220), -1)
    cv2.circle(image, (160, 120), 18, (90, 50, 170), -1)
    return image


@pytest.fixture(scope="module")
def leukonet():
    return make_classifier("leukonet", "4class")


@pytest.fixture(scope="module")
def paper_binary():
    return make_classifier("paper", "binary")


@pytest.mark.parametrize("architecture, task", [("leukonet", "4class"), ("paper", "binary"),
                                                ("leukonet-gn", "8class")])
def test_litert_serves_what_tensorflow_computes_at_every_batch_length(architecture, task):
    served = make_classifier(architecture, task, runtime="litert")
    reference = CellClassifier(served.model, served.metadata, runtime="tensorflow")
    windows = [window(k) for k in range(7)]
    # 7 cells in batches of 3: lengths 3, 3, 1, padded to 4, 4 and 1 inside LiteRT.
    litert = served.predict(windows, batch_size=3)
    assert served.serving_runtime == "litert"  # converted, not fallen back
    np.testing.assert_allclose(litert, reference.predict(windows, batch_size=3), atol=1e-5)
    np.testing.assert_allclose(served.predict(windows[:1], batch_size=1), litert[:1], atol=1e-5)


def test_a_network_litert_cannot_convert_is_served_by_tensorflow(monkeypatch, caplog):
    class ConverterRefuses:
        def __init__(self, model, input_shape, int8_weights=False):
            raise RuntimeError("op not supported")

    monkeypatch.setattr(inference, "_LiteRTForward", ConverterRefuses)
    served = make_classifier("leukonet", "4class")
    reference = CellClassifier(served.model, served.metadata, runtime="tensorflow")
    windows = [window(k) for k in range(3)]
    with caplog.at_level("WARNING", logger="classifier.inference"):
        probabilities = served.predict(windows)
    assert served.runtime == "litert-int8"  # what was asked for ...
    assert served.serving_runtime == "tensorflow"  # ... and what serves
    assert "LiteRT cannot run this network (op not supported)" in caplog.text
    np.testing.assert_allclose(probabilities, reference.predict(windows), atol=1e-6)


def test_a_network_converted_before_is_not_converted_again_and_another_network_is(monkeypatch):
    """Converting a network to LiteRT takes 1-2 s: a worker reloading a version it served before,
    or a training serving the network it trained twice, converted it again each time."""
    from collections import OrderedDict

    import keras
    import tensorflow as tf

    conversions = []
    convert = tf.lite.TFLiteConverter.from_keras_model
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model",
                        staticmethod(lambda model: conversions.append(model.name) or convert(model)))
    monkeypatch.setattr(inference, "_converted", OrderedDict())
    served = make_classifier("paper", "binary", runtime="litert")
    windows = [window(k) for k in range(3)]
    first = served.predict(windows)
    again = CellClassifier.from_bytes(model_to_bytes(served.model), served.metadata, runtime="litert")
    np.testing.assert_array_equal(again.predict(windows), first)
    assert len(conversions) == 1

    # One layer's weights changed: another network, converted and served as itself.
    changed = keras.models.clone_model(served.model)
    weights = served.model.get_weights()
    weights[-2] = weights[-2] + 0.5
    changed.set_weights(weights)
    other = CellClassifier(changed, served.metadata, runtime="litert").predict(windows)
    assert len(conversions) == 2
    reference = CellClassifier(changed, served.metadata, runtime="tensorflow").predict(windows)
    np.testing.assert_allclose(other, reference, atol=1e-5)
    assert np.abs(other - first).max() > 0.01


def test_an_unknown_runtime_is_refused(leukonet):
    with pytest.raises(ValueError, match="unknown runtime 'onnx'"):
        CellClassifier(leukonet.model, leukonet.metadata, runtime="onnx")


def test_predict_rows_sum_to_one(leukonet, paper_binary):
    windows = [window(k) for k in range(3)]
    for classifier in (leukonet, paper_binary):
        p = classifier.predict(windows)
        assert p.shape == (3, len(classifier.class_names))
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert (p >= 0).all()
    assert leukonet.predict([]).shape == (0, 4)


def test_temperature_softens_probabilities(paper_binary):
    windows = [window(k) for k in range(3)]
    raw = paper_binary.predict(windows, calibrated=False)
    calibrated = paper_binary.predict(windows)
    assert (np.abs(calibrated - 0.5) <= np.abs(raw - 0.5) + 1e-9).all()


def test_gradcam_shape_and_range(leukonet, paper_binary):
    for classifier in (leukonet, paper_binary):
        heatmaps = classifier.heatmaps(classifier.network_inputs([window(), window(1)]))
        assert heatmaps.shape == (2, *classifier.input_shape[:2])
        assert heatmaps.dtype == np.float32
        assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


def eager_gradcam(classifier, window, class_index):
    """Grad-CAM as the worker computed it before the pipeline shared one preparation: the window
    prepared again, the Keras network called eagerly on it alone."""
    import keras
    import tensorflow as tf

    layer = classifier.model.get_layer(classifier.gradcam_layer)
    network = keras.Model(classifier.model.inputs, [layer.output, classifier.model.output])
    with tf.GradientTape() as tape:
        batch = tf.constant(prepare_batch([window], classifier.input_spec))
        features, output = network(batch, training=False)
        if output.shape[-1] == 1:
            p = tf.clip_by_value(output[:, 0], 1e-7, 1 - 1e-7)
            score = tf.math.log(p) - tf.math.log(1 - p)
            score = score if class_index == 1 else -score
        else:
            score = tf.math.log(tf.clip_by_value(output[:, class_index], 1e-7, 1.0))
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0].numpy()
    height, width = classifier.input_shape[:2]
    cam = np.maximum(cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR), 0)
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.mark.parametrize("architecture, task", [("leukonet", "4class"), ("paper", "binary")])
def test_one_preparation_serves_the_call_the_heat_map_and_the_overlay(architecture, task):
    # The trained weights of a bundled network where present: random ones leave much of Grad-CAM
    # at zero, where a difference would go unseen.
    bundled = BUNDLED_MODELS_DIR / ("leukonet" if architecture == "leukonet" else "paper-binary")
    if is_model_folder(bundled):
        classifier = CellClassifier.from_directory(bundled)
    else:
        classifier = make_classifier(architecture, task)
    windows = [draw_field(name, seed) for seed, name in enumerate(FOUR_CLASSES)] + [window(5)]
    # As classifier.pipeline serves them: each window prepared once, called and explained from that.
    inputs = classifier.network_inputs(windows)
    probabilities = classifier.classify_inputs(inputs).probabilities
    calls = probabilities.argmax(axis=1)
    heatmaps = classifier.heatmaps(inputs, calls)

    for row, one in enumerate(windows):
        prepared = prepare_window(one, classifier.input_spec)
        np.testing.assert_array_equal(inputs[row], prepared)
    np.testing.assert_array_equal(probabilities, classifier.predict(windows))
    for row, one in enumerate(windows):
        np.testing.assert_array_equal(heatmaps[row], eager_gradcam(classifier, one, calls[row]))
    # Another class than the call ...
    others = (calls + 1) % len(classifier.class_names)
    explaining_others = classifier.heatmaps(inputs[:2], others[:2])
    np.testing.assert_array_equal(explaining_others[1], eager_gradcam(classifier, windows[1], others[1]))
    assert not np.array_equal(explaining_others[0], heatmaps[0])
    # ... and, where none is named, the float Keras network's own call.
    float_calls = CellClassifier(classifier.model, classifier.metadata, "tensorflow").predict(windows[:2])
    unnamed = classifier.heatmaps(inputs[:2])
    for row, call in enumerate(float_calls.argmax(axis=1)):
        np.testing.assert_array_equal(unnamed[row], eager_gradcam(classifier, windows[row], call))


def test_model_bytes_must_match_recorded_sha(leukonet):
    metadata = {**leukonet.metadata, "model_sha256": "0" * 64}
    with pytest.raises(ValueError, match="sha256"):
        CellClassifier.from_bytes(b"whatever", metadata)


def test_analyse_smear_finishes_every_detected_cell(leukonet):
    from classifier.detection import cell_window, centre_first, detect_leukocytes
    from classifier.pipeline import analyse_smear

    smear = cv2.resize(window(3), (640, 480), interpolation=cv2.INTER_LINEAR)
    analysis = analyse_smear(smear, leukonet, review_threshold=0.8)
    detection = detect_leukocytes(smear)
    found_cells = centre_first(detection.cells, smear.shape)
    assert [cell.box for cell in analysis.cells] == [found.box for found in found_cells]
    assert analysis.cells and "focus" in analysis.quality.to_dict()
    for cell, found in zip(analysis.cells, found_cells, strict=True):
        assert cell.detection_score == found.score
        assert sum(cell.probabilities.values()) == pytest.approx(1.0)
        assert cell.predicted_type in leukonet.class_names
        assert cell.binary_call in ("MONONUCLEAR", "POLYNUCLEAR")
        assert cell.confidence == pytest.approx(cell.probabilities[cell.predicted_type])
        # A network trained without the out-of-distribution score: flagged by confidence alone,
        # unless the photograph's quality warns, which flags every cell on it.
        doubtful = bool(analysis.quality.warnings)
        assert cell.ood_score is None and cell.needs_review == (cell.confidence < 0.8 or doubtful)
        # Lossless: the window stored is, pixel for pixel, the one the network was given.
        np.testing.assert_array_equal(decode_rgb(cell.window_png), cell_window(smear, found, detection.scale))
        assert cell.crop_jpeg[:2] == cell.heatmap_jpeg[:2] == b"\xff\xd8"  # JPEG
        assert decode_rgb(cell.heatmap_jpeg).shape == (240, 240, 3)  # LeukoNet's 96x96, drawn larger


def test_a_photographs_cells_are_numbered_from_its_centre_outwards():
    from classifier.detection import DetectedCell, centre_first

    corner = DetectedCell(box=(0, 0, 60, 60), score=1.0)
    centre = DetectedCell(box=(90, 70, 150, 130), score=0.3)
    near = DetectedCell(box=(130, 70, 190, 130), score=0.9)
    twin = DetectedCell(box=(90, 70, 150, 130), score=0.8)  # as near the centre: the better first
    assert centre_first([corner, near, centre, twin], (200, 240, 3)) == [twin, centre, near, corner]


@pytest.mark.parametrize("path, cell_type", [
    # A clump of red cells beside a basophil, and a broken eosinophil's spilled granules: the
    # detector scores each as high as the cell the photograph was taken of.
    (("TEST", "BASOPHIL", "BA_812946.jpg"), "BASOPHIL"),
    (("TEST", "EOSINOPHIL", "EO_956671.jpg"), "EOSINOPHIL"),
])
def test_a_single_cell_photographs_own_cell_comes_first(path, cell_type):
    from classifier.pipeline import analyse_smear

    photograph = require_dataset("pbc", *path)
    folder = BUNDLED_MODELS_DIR / "leukonet-gn-8class"
    if not is_model_folder(folder):
        pytest.skip(f"bundled model {folder} not present")
    analysis = analyse_smear(decode_rgb(photograph.read_bytes()), CellClassifier.from_directory(folder),
                             review_threshold=0.8)
    assert len(analysis.cells) == 2
    assert analysis.cells[0].predicted_type == cell_type
    # Said to be a photograph of one cell, it gives that cell alone, as the field's cell 1.
    one_cell = analyse_smear(decode_rgb(photograph.read_bytes()), CellClassifier.from_directory(folder),
                             review_threshold=0.8, one_cell=True)
    assert [cell.box for cell in one_cell.cells] == [analysis.cells[0].box]
    assert one_cell.cells[0].predicted_type == cell_type and one_cell.cells[0].outlined


def test_a_photograph_of_one_cell_with_no_outline_found_gives_its_middle_for_review():
    """A BCCD TEST eosinophil on which the detector outlines no nucleus: a smear field gives no cell,
    a photograph of one cell its middle, classified as the bench classifies it and flagged."""
    from classifier.detection import detect_leukocytes, middle_cell
    from classifier.pipeline import analyse_smear

    rgb = decode_rgb(require_dataset("blood-cell-images", "TEST", "EOSINOPHIL", "_10_2029.jpeg").read_bytes())
    folder = BUNDLED_MODELS_DIR / "leukonet-gn-8class"
    if not is_model_folder(folder):
        pytest.skip(f"bundled model {folder} not present")
    classifier = CellClassifier.from_directory(folder)
    assert analyse_smear(rgb, classifier, review_threshold=0.8).cells == []
    (cell,) = analyse_smear(rgb, classifier, review_threshold=0.8, one_cell=True).cells
    assert cell.box == middle_cell(rgb.shape, detect_leukocytes(rgb).scale).box
    assert cell.predicted_type == "EOSINOPHIL" and cell.confidence > 0.8
    assert not cell.outlined and cell.needs_review, "a confident call on an unoutlined cell still waits"


def test_a_blank_photograph_said_to_hold_one_cell_gives_its_middle_flagged(leukonet):
    from classifier.pipeline import analyse_smear

    blank = np.full((363, 360, 3), (225, 215, 220), np.uint8)
    (cell,) = analyse_smear(blank, leukonet, review_threshold=0.8, one_cell=True).cells
    assert not cell.outlined and cell.needs_review and cell.detection_score == 0.0
    x0, y0, x1, y1 = cell.box
    assert (x0 + x1) / 2 == pytest.approx(180, abs=1) and (y0 + y1) / 2 == pytest.approx(181.5, abs=1)
    # A box a person drew there is the photograph's cell: no middle is given beside it.
    drawn = analyse_smear(blank, leukonet, review_threshold=0.8, one_cell=True,
                          given_boxes=[(20, 30, 120, 130)])
    assert drawn.cells == [] and [cell.box for cell in drawn.given_cells] == [(20, 30, 120, 130)]


def test_cells_photographed_at_too_low_a_resolution_are_flagged(leukonet):
    from classifier.detection import detect_leukocytes
    from classifier.pipeline import analyse_smear
    from classifier.quality import MIN_SCALE

    smear = cv2.resize(window(3), (640, 480), interpolation=cv2.INTER_LINEAR)
    factor = 0.8 * MIN_SCALE / detect_leukocytes(smear).scale
    shrunk = cv2.resize(smear, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    # A threshold of 0 flags no call for its confidence (the untrained network is unsure of all of
    # them): whatever is flagged here is flagged for the photograph.
    analysis = analyse_smear(shrunk, leukonet, review_threshold=0.0)
    assert analysis.cells, "the shrunk photograph's cell is still found"
    assert any("photographed at low resolution" in warning for warning in analysis.quality.warnings)
    assert all(cell.needs_review for cell in analysis.cells)
    as_taken = analyse_smear(smear, leukonet, review_threshold=0.8)
    assert not any("low resolution" in warning for warning in as_taken.quality.warnings)


def test_the_pipeline_takes_a_second_look_where_the_network_is_unsure():
    from classifier import second_look
    from classifier.detection import cell_window, centre_first, detect_leukocytes
    from classifier.pipeline import analyse_smear

    folder = BUNDLED_MODELS_DIR / "leukonet-gn-8class"
    if not is_model_folder(folder):
        pytest.skip(f"bundled model {folder} not present")
    classifier = CellClassifier.from_directory(folder)
    names = list(classifier.class_names)
    factors = (1.0, *second_look.SECOND_LOOK_FACTORS)
    looked_again, switched = 0, 0
    # Drawn cells, two of each type: the network is unsure of several (confidence 0.6-0.9), and
    # takes some of those from another view.
    for seed, name in enumerate(FOUR_CLASSES * 2):
        smear = draw_field(name, seed)
        analysis = analyse_smear(smear, classifier, review_threshold=0.8)
        detection = detect_leukocytes(smear)
        views = {f: [cell_window(smear, cell, detection.scale * f)
                     for cell in centre_first(detection.cells, smear.shape)] for f in factors}
        calls = {f: classifier.classify(views[f]) for f in factors}
        first = calls[1.0]
        unsure = first.confidence < second_look.SECOND_LOOK_BELOW
        looked_again += int(unsure.sum())
        doubtful = bool(analysis.quality.warnings)
        for row, cell in enumerate(analysis.cells):
            # The view with the lowest out-of-distribution score, for an unsure call; else the first.
            chosen = min(factors, key=lambda f: calls[f].ood_scores[row]) if unsure[row] else 1.0
            switched += chosen != 1.0
            np.testing.assert_array_equal(decode_rgb(cell.window_png), views[chosen][row])
            np.testing.assert_allclose(list(cell.probabilities.values()), calls[chosen].probabilities[row],
                                       atol=1e-6)
            assert cell.view_factor == chosen
            first_type = names[int(first.probabilities[row].argmax())]
            if unsure[row]:
                assert cell.first_look_type == first_type
                assert cell.first_look_confidence == pytest.approx(float(first.confidence[row]))
            else:
                assert (cell.first_look_type, cell.first_look_confidence) == ("", None)
            # The score is the first look's; the flag is the first look's, or a call the second
            # look changed, or a served confidence under the threshold.
            assert cell.ood_score == pytest.approx(float(first.ood_scores[row]))
            changed = cell.predicted_type != first_type
            first_flag = bool(first.needs_review(0.8)[row])
            assert cell.needs_review == (first_flag or changed or cell.confidence < 0.8 or doubtful)
    assert looked_again and switched, "no drawn cell was called from another view: nothing was tested"


def test_a_smear_without_leukocytes_has_no_cells(leukonet):
    from classifier.pipeline import analyse_smear

    blank = np.full((480, 640, 3), (225, 215, 220), np.uint8)
    analysis = analyse_smear(blank, leukonet, review_threshold=0.8)
    assert analysis.cells == [] and analysis.quality.brightness > 0


def test_importing_the_serving_path_does_not_import_tensorflow():
    code = (
        "import sys, classifier.inference, classifier.pipeline, classifier.training;"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("name", ["leukonet-gn-8class", "leukonet", "paper-binary"])
def test_bundled_models_load_and_predict(name):
    folder = BUNDLED_MODELS_DIR / name
    if not is_model_folder(folder):
        pytest.skip(f"bundled model {folder} not present")
    # Strict JSON: NaN or Infinity would load here but be refused by the database's JSON columns.
    def refuse(constant):
        raise ValueError(f"{constant} in {folder / METADATA_FILE}")

    json.loads((folder / METADATA_FILE).read_text(), parse_constant=refuse)
    classifier = CellClassifier.from_directory(folder)
    p = classifier.predict([window(1)])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (folder / MODEL_FILE).stat().st_size <= 10 * 1024 * 1024


@pytest.mark.parametrize("name", ["leukonet-gn-8class", "leukonet", "paper-binary"])
def test_int8_serving_stays_close_to_float_and_ignores_batchmates(name):
    folder = BUNDLED_MODELS_DIR / name
    if not is_model_folder(folder):
        pytest.skip(f"bundled model {folder} not present")
    served = CellClassifier.from_directory(folder)  # the default: int8 weights
    exact = CellClassifier(served.model, served.metadata, runtime="tensorflow")
    windows = [window(k) for k in range(6)]
    together = served.predict(windows)
    assert served.serving_runtime == "litert-int8"
    np.testing.assert_allclose(together, exact.predict(windows), atol=0.05)
    # Activations are quantized per cell: a cell comes out the same alone as among others.
    alone = np.concatenate([served.predict([w], batch_size=1) for w in windows])
    np.testing.assert_array_equal(alone, together)


@pytest.mark.parametrize("leukocytes, flagged", [
    # Two cells, neither over the middle: the one nearest it may be the photographed cell's neighbour.
    ([(200, 240, "LOBED"), (500, 110, "ROUND")], True),
    # One cell off the middle: the photograph's own, framed loosely.
    ([(200, 240, "LOBED")], False),
])
def test_a_one_cell_pick_off_the_middle_beside_others_is_flagged(leukonet, leukocytes, flagged):
    from classifier.boxes import holds_centre
    from classifier.pipeline import analyse_smear
    from tests.classifier import test_detection as drawn

    smear, _ = drawn.draw_smear(leukocytes=[(x, y, getattr(drawn, kind)) for x, y, kind in leukocytes])
    as_field = analyse_smear(smear, leukonet, review_threshold=0.0)
    assert len(as_field.cells) == len(leukocytes) and not as_field.quality.warnings
    assert not any(cell.needs_review for cell in as_field.cells)  # nothing else flags them
    (cell,) = analyse_smear(smear, leukonet, review_threshold=0.0, one_cell=True).cells
    assert cell.box == as_field.cells[0].box and not holds_centre(cell.box, 640, 480)
    assert cell.needs_review is flagged and cell.outlined
