"""How unfamiliar a cell looks to a network: its out-of-distribution score, and the review decision
that weighs that score beside the network's confidence.

The score is the squared Mahalanobis distance of the cell's penultimate features (the input of the
network's last Dense layer, ``logits``) to the nearest training class, with the class means and
one covariance shared by all classes (Lee et al. 2018, "A simple unified framework for detecting
out-of-distribution samples"), shrunk toward a multiple of the identity by the Ledoit-Wolf rule
(2004) so that it stays invertible where a run has fewer cells than features. It is divided by
the version's threshold, so a score above 1 says "unlike anything this network was trained on",
whatever the network: a cell from another lab, stain or scanner, a cell type the network was never
taught, or debris.

Why not confidence alone: on pbc/TEST (another lab) the bundled BCCD-trained LeukoNet called
two cells in three wrongly, 60% of those wrong calls at 0.80 confidence or more, so flagging under
0.80 caught 40% of them. Its features told the two labs apart far better (ROC AUC 0.96 between
BCCD TEST and pbc/TEST cells, against 0.71 for the confidence), while for errors among a lab's own
cells confidence is the better guide (ROC AUC 0.83 against 0.65): the review flag uses both.

Where it lives: in the network itself, as a second output ``ood_score`` made of plain Keras
layers (whitening, squared distances to the whitened class means, their minimum), so a version
carries its statistics in its own weights and its SHA-256, and a model version needs no database
field for them. LiteRT serves the score's layers apart, in float32, on the penultimate features the
(int8) network returns beside its probabilities: int8 quantizes each layer's input activations,
and inside the whitening layer that moved the bundled LeukoNet's scores on 1,275 TEST cells of
both sources by 2.6% (median; up to 25%) and changed 15 of 438 flags, against 0.7% (up to 4.7%)
and 5 flags, all from the int8 trunk's features, this way. NumPy would compute the same, but its
multi-threaded BLAS took a median 14 ms for those 64 x 192 x 192 multiply-adds on this busy 2-core
machine (0.15 ms on one thread), where a second LiteRT call costs well under a millisecond.

NumPy at import; Keras only inside the functions that build networks.
"""

from dataclasses import dataclass

import numpy as np

# The score reads the input of this layer: the last Dense layer every architecture's head names so.
FEATURE_LAYER = "logits"
OUTPUT_NAME = "ood_score"
# Above this a cell is unfamiliar: the score is in units of the version's threshold.
UNFAMILIAR_ABOVE = 1.0
# Calls under this confidence need review where a version fitted no threshold of its own (trained
# before runs fitted one, or a refit, which holds no cells out to fit it on).
DEFAULT_CONFIDENCE_THRESHOLD = 0.80
# Which share of in-distribution cells stays under the threshold. A held-out run fits it on its
# validation cells, unseen in training: one in ten scores above it, and the flag's budget (20% of
# a lab's cells) leaves room for the low-confidence calls beside them. A refit has no unseen cells
# and fits it on its training cells, which lie closer to their class means than new cells do: for
# the bundled LeukoNet the 97.5th percentile of training cells fell at the 89.9th-91.5th of its
# TEST cells over six group splits (shrinkage 0.01), hence 0.975 there.
HELD_OUT_QUANTILE = 0.90
REFIT_QUANTILE = 0.975

_WHITEN, _NORMS, _CROSS = "ood_whiten", "ood_norms", "ood_cross"


@dataclass(frozen=True)
class OodHead:
    """The score's parameters: z = features @ kernel + bias (whitened, centred and divided by the
    square root of the threshold), score = min over classes of |z - class_points[c]|^2."""

    kernel: np.ndarray  # (D, D)
    bias: np.ndarray  # (D,)
    class_points: np.ndarray  # (C, D)

    def __call__(self, features):
        """(N,) float64 scores of (N, D) penultimate features."""
        z = np.asarray(features, np.float64) @ self.kernel + self.bias
        points = self.class_points
        squared = (z * z).sum(axis=1)[:, None] - 2.0 * z @ points.T + (points * points).sum(axis=1)
        return np.maximum(squared.min(axis=1), 0.0)

    @classmethod
    def from_model(cls, model):
        """The head a network carries, read from its weights, or None where it has none."""
        if OUTPUT_NAME not in getattr(model, "output_names", ()):
            return None
        kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer(_WHITEN).get_weights())
        cross = np.asarray(model.get_layer(_CROSS).get_weights()[0], np.float64)
        return cls(kernel=kernel, bias=bias, class_points=-cross.T / 2.0)


def feature_tensor(model):
    """The penultimate features of a network (the input of its last Dense layer)."""
    return model.get_layer(FEATURE_LAYER).input


def served_tensors(model):
    """(probabilities, penultimate features or None) of a stored network: what serving computes."""
    if OUTPUT_NAME not in getattr(model, "output_names", ()):
        return model.outputs[0], None
    return model.outputs[0], model.get_layer(_WHITEN).input


def balanced_weights(count, sources=None, groups=None):
    """Weights summing to 1 over ``count`` cells: each source's cells together weigh the same, and
    within a source each group (an original photograph and its augmented copies) counts once."""
    sources = np.zeros(count, np.int64) if sources is None else np.asarray(sources)
    groups = np.arange(count) if groups is None else np.asarray(groups)
    weights = np.zeros(count, np.float64)
    names = np.unique(sources)
    for source in names:
        rows = np.flatnonzero(sources == source)
        _, position, sizes = np.unique(groups[rows], return_inverse=True, return_counts=True)
        weights[rows] = 1.0 / (sizes[position] * len(sizes) * len(names))
    return weights


def weighted_quantile(values, quantile, weights):
    """The smallest value at or under which ``quantile`` of the total weight lies."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(np.asarray(weights, np.float64)[order])
    position = np.searchsorted(cumulative, quantile * cumulative[-1], side="left")
    return float(values[order][min(position, len(values) - 1)])


def ledoit_wolf_shrinkage(centred):
    """The share of trace/D times the identity that the Ledoit-Wolf rule mixes into the covariance
    of ``centred`` (N, D) rows. The bundled LeukoNet's 9,957 BCCD training cells get 0.0015 (ROC
    AUC BCCD TEST against pbc/TEST 0.965, as unshrunk; 0.950 at 0.1); 40 cells of it get 0.24."""
    count, dimensions = centred.shape
    covariance = centred.T @ centred / count
    level = np.trace(covariance) / dimensions
    spread = (covariance * covariance).sum()
    beta = ((np.einsum("ij,ij->i", centred, centred) ** 2).sum() / count - spread) / count
    delta = spread - dimensions * level * level
    return float(np.clip(beta / delta, 0.0, 1.0)) if delta > 0 else 1.0


def _class_statistics(features, labels, n_classes):
    """(class means (C, D), whitening (D, D) with |(f - mean) @ W|^2 the squared distance, the
    shrinkage used)."""
    dimensions = features.shape[1]
    means = np.zeros((n_classes, dimensions))
    for k in range(n_classes):
        members = features[labels == k]
        means[k] = members.mean(axis=0) if len(members) else features.mean(axis=0)
    centred = features - means[labels]
    shrinkage = ledoit_wolf_shrinkage(centred)
    covariance = centred.T @ centred / len(features)
    level = np.trace(covariance) / dimensions or 1.0
    covariance = (1.0 - shrinkage) * covariance + shrinkage * level * np.eye(dimensions)
    variances, directions = np.linalg.eigh(covariance)
    return means, directions / np.sqrt(np.maximum(variances, 1e-12 * level)), shrinkage


def fit_ood_head(features, labels, n_classes, reference, quantile):
    """(OodHead, what to record of it) from training features and labels; the threshold is the
    balanced ``quantile`` of the squared distances of ``reference``, a (features, sources or None,
    groups or None) triple of in-distribution cells (validation, or a refit's training cells)."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.int64)
    means, whitening, shrinkage = _class_statistics(features, labels, n_classes)
    centre = features.mean(axis=0)
    unit = OodHead(kernel=whitening, bias=-centre @ whitening, class_points=(means - centre) @ whitening)
    reference_features, sources, groups = reference
    distances = unit(reference_features)
    threshold = weighted_quantile(distances, quantile, balanced_weights(len(distances), sources, groups))
    threshold = max(threshold, 1e-9)
    scale = 1.0 / np.sqrt(threshold)
    head = OodHead(kernel=unit.kernel * scale, bias=unit.bias * scale, class_points=unit.class_points * scale)
    record = {
        "score": "squared Mahalanobis distance of the penultimate features to the nearest training "
        "class (class means, one shared covariance), divided by the threshold: above 1 is unfamiliar",
        "threshold_distance": float(threshold),
        "quantile": float(quantile),
        "shrinkage": float(shrinkage),
        "dimensions": int(features.shape[1]),
        "training_cells": int(len(features)),
        "threshold_cells": int(len(distances)),
    }
    return head, record


def _score_layers(keras, features, dimensions, classes):
    """The score's plain Keras layers on a features tensor (they load without custom objects)."""
    layers = keras.layers
    z = layers.Dense(dimensions, name=_WHITEN, trainable=False)(features)
    norms = layers.Dense(classes, use_bias=False, name=_NORMS, trainable=False)(layers.Multiply()([z, z]))
    cross = layers.Dense(classes, name=_CROSS, trainable=False)(z)
    distances = layers.Add(name="ood_distances")([norms, cross])
    # The minimum over classes, as the maximum of the negated distances.
    nearest = layers.GlobalMaxPooling1D()(layers.Reshape((classes, 1))(layers.Rescaling(-1.0)(distances)))
    return layers.Rescaling(-1.0, name=OUTPUT_NAME)(nearest)


def _set_score_weights(network, head):
    dimensions, classes = head.kernel.shape[0], head.class_points.shape[0]
    points = head.class_points
    network.get_layer(_WHITEN).set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
    network.get_layer(_NORMS).set_weights([np.ones((dimensions, classes), np.float32)])
    network.get_layer(_CROSS).set_weights([
        (-2.0 * points.T).astype(np.float32), (points * points).sum(axis=1).astype(np.float32)
    ])
    return network


def with_ood_output(model, head):
    """The network with a second output, ``ood_score``, that computes ``head`` from its
    penultimate features."""
    import keras

    dimensions, classes = head.kernel.shape[0], head.class_points.shape[0]
    score = _score_layers(keras, feature_tensor(model), dimensions, classes)
    return _set_score_weights(keras.Model(model.input, [model.outputs[0], score], name=model.name), head)


def score_network(head):
    """The score alone, from (N, D) penultimate features to (N, 1) scores, as a Keras model: what
    LiteRT serves in float32 beside the int8 network (the module's docstring says why)."""
    import keras

    dimensions, classes = head.kernel.shape[0], head.class_points.shape[0]
    features = keras.Input((dimensions,), name="features")
    score = _score_layers(keras, features, dimensions, classes)
    return _set_score_weights(keras.Model(features, score, name="ood_score"), head)


def fitted_confidence_threshold(metrics):
    """The review flag's confidence threshold a version fitted on its validation cells
    (classifier.training.trust.fit_review_threshold), or None where it fitted none."""
    return ((metrics or {}).get("review") or {}).get("confidence_threshold")


def confidence_threshold(metrics):
    """The review flag's confidence threshold of a version: the one it fitted, else the default."""
    return fitted_or_default_threshold(fitted_confidence_threshold(metrics))


def fitted_or_default_threshold(fitted):
    """A fitted confidence threshold (None: none was fitted), else DEFAULT_CONFIDENCE_THRESHOLD."""
    return DEFAULT_CONFIDENCE_THRESHOLD if fitted is None else float(fitted)


def review_flags(confidence, ood_scores, confidence_threshold):
    """Why each cell's call would be flagged, as two boolean arrays: its confidence is under the
    site's threshold; the cell is unfamiliar to the network (score above 1; a network without a
    score: never). The one statement of the network's review rule, which pages explain from."""
    unsure = np.asarray(confidence, np.float64) < confidence_threshold
    if ood_scores is None:
        return unsure, np.zeros_like(unsure)
    return unsure, np.asarray(ood_scores, np.float64) > UNFAMILIAR_ABOVE


def needs_review(confidence, ood_scores, confidence_threshold):
    """The review flag of each cell: either reason of ``review_flags``."""
    unsure, unfamiliar = review_flags(confidence, ood_scores, confidence_threshold)
    return unsure | unfamiliar
