"""Held-out metrics, NumPy only, every value JSON-serialisable."""

import math

import numpy as np

from classifier.labels import BINARY_CLASSES, BINARY_GROUP

ECE_BINS = 15
# Confidence thresholds at which review flagging is reported (the site flags under 0.80 by default).
REVIEW_THRESHOLDS = (0.6, 0.7, 0.8, 0.9, 0.95)


def confusion_matrix(y_true, y_pred, n_classes):
    """Rows are the true class, columns the predicted one."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def expected_calibration_error(probabilities, y_true, n_bins=ECE_BINS):
    """ECE of the top-class confidence over equal-width bins."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def roc_auc(y_true, scores):
    """Rank-based (Mann-Whitney) ROC AUC; ties get average ranks. None without both classes."""
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(probabilities, y_true):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return 0.0
    picked = probabilities[np.arange(len(probabilities)), np.asarray(y_true, int)]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def classification_metrics(y_true, probabilities, class_names, n_bins=ECE_BINS, review_thresholds=()):
    """Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix, ECE (+AUC),
    and the review flag's figures at REVIEW_THRESHOLDS plus any ``review_thresholds`` given."""
    class_names = list(class_names)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(class_names))
    y_true = np.asarray(y_true, dtype=int)
    y_pred = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, int)
    n_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    per_class = {}
    recalls = []
    for k, name in enumerate(class_names):
        tp = int(matrix[k, k])
        support = int(matrix[k].sum())
        predicted = int(matrix[:, k].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": support,
        }
        if support:
            recalls.append(recall)
    n = int(len(y_true))
    result = {
        "n": n,
        "class_names": class_names,
        "accuracy": float((y_pred == y_true).mean()) if n else 0.0,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "ece": expected_calibration_error(probabilities, y_true, n_bins),
        "log_loss": log_loss(probabilities, y_true),
        "review_flagging": review_flagging(
            y_true, probabilities, _merged_thresholds(REVIEW_THRESHOLDS, review_thresholds)
        ),
    }
    if n_classes == 2:
        result["roc_auc"] = roc_auc(y_true == 1, probabilities[:, 1])
    return result


def _merged_thresholds(standard, extra):
    """Sorted thresholds, an extra one that equals a standard one (to float error) kept once."""
    merged = list(standard)
    for threshold in extra:
        if not any(math.isclose(threshold, known) for known in merged):
            merged.append(float(threshold))
    return sorted(merged)


def binary_from_four(probabilities, class_names):
    """Sum per-type probability columns into (MONONUCLEAR, POLYNUCLEAR) columns; a type in
    neither group (an erythroblast, a platelet) adds to neither."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if tuple(class_names) == BINARY_CLASSES:
        return probabilities
    out = np.zeros((len(probabilities), 2))
    for k, name in enumerate(class_names):
        if name in BINARY_GROUP:
            out[:, BINARY_CLASSES.index(BINARY_GROUP[name])] += probabilities[:, k]
    return out


def binary_labels(y_true, class_names):
    """The binary group (index into BINARY_CLASSES) of each label, -1 for a type in neither."""
    class_names = list(class_names)
    if tuple(class_names) == BINARY_CLASSES:
        return np.asarray(y_true, int)
    lookup = np.array([
        BINARY_CLASSES.index(BINARY_GROUP[name]) if name in BINARY_GROUP else -1
        for name in class_names
    ])
    return lookup[np.asarray(y_true, int)]


def review_flagging(y_true, probabilities, thresholds, confidence=None, also_flagged=None):
    """What flagging every call below a confidence threshold for review buys, per threshold.

    For each threshold: the share of cells flagged, the share of the network's errors among them
    (what review can catch), and the accuracy of the calls left unflagged (what staff accept
    unread). ``confidence``: what the flag reads where it is not the call's own (a first look's,
    classifier.second_look); ``also_flagged``: cells flagged at every threshold (bool mask).
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1) if confidence is None else np.asarray(confidence)
    wrong = probabilities.argmax(axis=1) != y_true
    also_flagged = np.zeros(len(y_true), bool) if also_flagged is None else np.asarray(also_flagged)
    rows = []
    for threshold in thresholds:
        flagged = (confidence < threshold) | also_flagged
        unflagged = ~flagged
        rows.append({
            "threshold": float(threshold),
            "flagged_share": float(flagged.mean()) if len(y_true) else 0.0,
            "errors_caught": float(wrong[flagged].sum() / wrong.sum()) if wrong.any() else 1.0,
            "errors": int(wrong.sum()),
            "unflagged_accuracy": float(1 - wrong[unflagged].mean()) if unflagged.any() else 1.0,
        })
    return rows


def format_metrics(metrics, title=None):
    """A printable table: accuracy figures, per-class precision/recall/F1, confusion matrix."""
    lines = []
    if title:
        lines.append(title)
    names = metrics["class_names"]
    head = (
        f"n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  "
        f"balanced={metrics['balanced_accuracy']:.4f}  ECE={metrics['ece']:.4f}"
    )
    if metrics.get("roc_auc") is not None:
        head += f"  ROC AUC={metrics['roc_auc']:.4f}"
    if metrics.get("skipped_files"):  # a split's files that did not decode: n leaves them out
        skipped = metrics["skipped_files"]
        head += f"  ({skipped} file{'' if skipped == 1 else 's'} skipped: named below)"
    lines.append(head)
    width = max(12, *(len(name) + 1 for name in names))
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>8}")
    for name in names:
        row = metrics["per_class"][name]
        lines.append(
            f"{name:<{width}} {row['precision']:>9.3f} {row['recall']:>7.3f} "
            f"{row['f1']:>7.3f} {row['support']:>8d}"
        )
    lines.append("confusion matrix (rows: true, columns: predicted)")
    short = [name[:6] for name in names]
    lines.append(" " * width + " ".join(f"{s:>7}" for s in short))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}" + " ".join(f"{v:>7d}" for v in row))
    lines.extend(format_review_flagging(metrics.get("review_flagging") or []))
    lines.extend(format_skipped(metrics.get("skipped_files"), metrics.get("skipped_named")))
    return "\n".join(lines)


def format_skipped(count, named, left_out_of="these figures"):
    """Printable lines naming the ``count`` skipped files (dataset.skipped_files' ``named``, the
    first of them, with why), so that a lab can find and mend them; none where none was skipped."""
    if not count:
        return []
    named = named or []
    lines = [f"{count} file{'' if count == 1 else 's'} skipped, left out of {left_out_of}:"]
    lines += [f"  {row['path']}: {row['reason']}" for row in named]
    if count > len(named):
        lines.append(f"  and {count - len(named)} more{' not named' if named else ''}")
    return lines


def format_review_flagging(rows, site_threshold=None, where=""):
    """Printable lines, one per threshold, for review_flagging's rows."""
    if not rows:
        return []
    lines = [f"review flag (calibrated confidence under the threshold){where}:"]
    for row in rows:
        at_site = site_threshold is not None and math.isclose(row["threshold"], site_threshold)
        mark = "  <- the site's threshold" if at_site else ""
        lines.append(
            f"  under {row['threshold']:.2f}: {row['flagged_share']:.1%} of cells flagged, "
            f"{caught_words(row)}, {unflagged_words(row['flagged_share'], row['unflagged_accuracy'])}{mark}"
        )
    return lines


def caught_words(row):
    """The share of the errors a review_flagging row's flag caught, in words; with no error to
    catch (the stored share is then 1.0, which "100.0% of the errors" would misread) it says so.
    Rows stored before the errors were counted read as they always did."""
    if row.get("errors") == 0:
        return "no errors to catch"
    return f"{row['errors_caught']:.1%} of the errors among them"


def unflagged_words(flagged_share, unflagged_accuracy):
    """How right the unflagged calls were, in words; with every cell flagged there were none (the
    stored figure is then 1.0, which "100.0% right" would misread)."""
    if flagged_share >= 1:
        return "no call left unflagged"
    return f"unflagged calls {unflagged_accuracy:.1%} right"


def groups_mostly_wrong(images, probabilities, y, names, below=0.5):
    """(number of photograph groups, the groups whose copies are mostly misclassified), worst first.

    blood-cell-images holds 12-156 augmented copies of each original photograph, and photographs
    of one slide area share a group (originals.csv), so a few groups decide an accuracy figure.
    A group holding cells of two types (a lymphocyte and a monocyte photographed side by side)
    is judged per type. ``share_of_test`` is the group's share of the images given;
    ``mostly_called`` is the commonest wrong call.
    """
    parts = {}
    for k, image in enumerate(images):
        if image.group:
            parts.setdefault((image.group, int(y[k])), []).append(k)
    predicted = probabilities.argmax(1)
    worst = []
    for (group, label), members in parts.items():
        members = np.array(members)
        right = float((predicted[members] == label).mean())
        if right < below:
            called = np.bincount(predicted[members], minlength=len(names))
            called[label] = -1
            worst.append(
                {
                    "group": group,
                    "label": names[label],
                    "copies": int(len(members)),
                    "share_of_test": float(len(members) / len(y)),
                    "accuracy": right,
                    "mostly_called": names[int(called.argmax())],
                }
            )
    groups = {group for group, _ in parts}
    return len(groups), sorted(worst, key=lambda row: -row["copies"] * (1 - row["accuracy"]))
