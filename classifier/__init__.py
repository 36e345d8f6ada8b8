"""Leukoscope's ML core: finds leukocytes in smear photographs and classifies them.

Plain Python, NumPy, OpenCV and TensorFlow/Keras; nothing here knows about Django, HTTP or Celery.
TensorFlow is imported lazily inside the functions that need it, so importing this package is cheap.

Used as a library (from the checkout's root, or with it on PYTHONPATH)::

    from pathlib import Path
    from classifier import ood
    from classifier.inference import CellClassifier
    from classifier.model_folder import BUNDLED_MODELS_DIR
    from classifier.pipeline import analyse_smear
    from classifier.rendering import decode_rgb

    network = CellClassifier.from_directory(BUNDLED_MODELS_DIR / "leukonet-gn-8class")
    threshold = ood.confidence_threshold(network.metadata.get("metrics"))  # the review flag's
    rgb = decode_rgb(Path("smear.jpg").read_bytes())  # (H, W, 3) uint8 RGB, any size
    for cell in analyse_smear(rgb, network, review_threshold=threshold).cells:
        print(cell.box, cell.predicted_type, cell.confidence, cell.ood_score, cell.needs_review)

``analyse_smear(..., one_cell=True)`` takes a photograph of one cell (a PBC crop) and gives that
cell. Each FinishedCell (classifier.pipeline) holds its calibrated probabilities by class name, its
out-of-distribution score (above 1: unlike the network's training cells) and the review flag.
``CellClassifier.classify`` takes 240x320 uint8 context windows (classifier.detection.cell_window)
and returns CellCalls: (N, C) probabilities in ``class_names`` order and (N,) scores. Bad input
raises ValueError subclasses whose message says what is wrong (classifier.errors,
model_folder.ModelFolderError).
"""
