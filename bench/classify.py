"""Benchmark a cell classifier on the official TEST split of blood-cell-images.

    python bench/classify.py [--model-dir DIR | --model-version active|ID] [--data DIR]

A model folder (default: the bundled LeukoNet), or a version stored in the site's database, loaded
as its workers load it (`make bench-classify` benchmarks the active one).

Prints 4-class and binary accuracy (binary summed from the 4-class probabilities for a 4-class
network), balanced accuracy, per-class recall, accuracy without the 87 same_cell_in_train images,
TEST_SIMPLE accuracy, ECE before/after temperature scaling, cells/s at batch 64, ms/cell at
batch 1, model size, the process's peak memory, and the TEST photograph groups whose copies are
mostly misclassified (the few that decide the accuracy).
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from classifier import dataset  # noqa: E402
from classifier.errors import TrainingDataError  # noqa: E402
from classifier.metrics import (  # noqa: E402
    binary_from_four,
    binary_labels,
    classification_metrics,
    format_review_flagging,
    groups_mostly_wrong,
)
from classifier.model_folder import BUNDLED_MODELS_DIR  # noqa: E402
from classifier.runtimes import DEFAULT_RUNTIME, RUNTIMES, quiet_tensorflow_startup  # noqa: E402

DEFAULT_MODEL_DIR = BUNDLED_MODELS_DIR / "leukonet"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "blood-cell-images"


def _split(classifier, layout, split, originals):
    folder = layout.eval_dirs.get(split)
    if folder is None:
        return None
    images = dataset.list_images(folder, classifier.task, split, originals)
    scale = classifier.metadata.get("hyperparameters", {}).get("window_scale", "image")
    inputs, ok, located = dataset.load_prepared(images, classifier.input_spec, 1.0, scale)
    images = [i for i, good in zip(images, ok, strict=True) if good]
    index = {name: k for k, name in enumerate(classifier.class_names)}
    y = np.array([index[i.class_name] for i in images])
    x = inputs[ok].astype(np.float32) / np.float32(255.0)
    return images, x, y, located[ok]


def _throughput(classifier, windows):
    """(cells/s at batch 64, ms/cell at batch 1, spread) through predict(), preparation included.

    Each batch is timed on its own for at least 3 s and the figures come from the median call, so
    that a neighbour's burst on a shared machine moves them less than it moves a mean; the spread
    (10th-90th percentile of the batch-64 calls, in cells/s) is reported beside them.
    """
    windows = list(windows)
    classifier.predict(windows[:64])  # warm-up: first calls trace the graph
    classifier.predict(windows[:1])
    batch64 = windows[:64]

    def timed_calls(batch, batch_size, minimum_seconds=3.0, minimum_calls=5):
        seconds = []
        started = time.perf_counter()
        while time.perf_counter() - started < minimum_seconds or len(seconds) < minimum_calls:
            call_started = time.perf_counter()
            classifier.predict(batch, batch_size=batch_size)
            seconds.append(time.perf_counter() - call_started)
        return np.array(seconds)

    batch_seconds = timed_calls(batch64, 64)
    rates = len(batch64) / batch_seconds
    singles = windows[:50]
    single_seconds = np.array([
        np.median(timed_calls([window], 1, minimum_seconds=0.0, minimum_calls=3)) for window in singles
    ])
    spread = (float(np.percentile(rates, 10)), float(np.percentile(rates, 90)))
    return float(np.median(rates)), float(np.median(single_seconds)) * 1000.0, spread


def run_benchmark(classifier, data_dir=DEFAULT_DATA, review_threshold=0.8) -> dict:
    """Held-out figures and speed of a CellClassifier on data_dir's TEST (and TEST_SIMPLE)."""
    layout = dataset.resolve_layout(data_dir)
    originals = dataset.read_originals(layout.root)
    names = list(classifier.class_names)
    report = {
        "architecture": classifier.architecture,
        "task": classifier.task,
        "class_names": names,
        "input_spec": classifier.input_spec,
        "temperature": classifier.temperature,
        "size_bytes": classifier.size_bytes,
        "runtime": classifier.serving_runtime,
        "data_dir": str(data_dir),
    }
    test = _split(classifier, layout, "TEST", originals)
    if test is None:
        raise FileNotFoundError(f"{data_dir} has no TEST folder")
    images, x, y, located = test
    calibrated = classifier.predict_inputs(x)
    raw = classifier.predict_inputs(x, calibrated=False)
    metrics = classification_metrics(y, calibrated, names, review_thresholds=[review_threshold])
    report["test"] = metrics
    report["test_n"] = len(y)
    report["test_located_share"] = float(np.mean(located)) if len(located) else 0.0
    report["ece_before_temperature"] = classification_metrics(y, raw, names)["ece"]
    report["ece_after_temperature"] = metrics["ece"]
    binary = classification_metrics(
        binary_labels(y, names),
        binary_from_four(calibrated, names),
        ("MONONUCLEAR", "POLYNUCLEAR"),
    )
    report["test_binary"] = binary
    same = np.array([i.same_cell_in_train for i in images])
    keep = ~same
    report["test_without_same_cell"] = {
        "n": int(keep.sum()),
        "accuracy": float((calibrated[keep].argmax(1) == y[keep]).mean()),
        "binary_accuracy": float(
            (
                binary_from_four(calibrated[keep], names).argmax(1) == binary_labels(y[keep], names)
            ).mean()
        ),
    }
    report["review_threshold"] = review_threshold
    report["review_flagging"] = metrics["review_flagging"]
    report["test_photographs"], report["test_worst_photographs"] = groups_mostly_wrong(
        images, calibrated, y, names
    )
    simple = _split(classifier, layout, "TEST_SIMPLE", originals)
    if simple is not None:
        _, xs, ys, _ = simple
        ps = classifier.predict_inputs(xs)
        report["test_simple"] = {
            "n": int(len(ys)),
            "accuracy": float((ps.argmax(1) == ys).mean()),
            "binary_accuracy": float(
                (binary_from_four(ps, names).argmax(1) == binary_labels(ys, names)).mean()
            ),
        }
    windows = [
        w
        for w in dataset.load_context_windows(images[:256], classifier.input_spec)
        if w is not None
    ]
    cells_per_second, ms_per_cell, spread = _throughput(classifier, windows)
    report["cells_per_second_batch64"] = cells_per_second
    report["cells_per_second_batch64_p10_p90"] = spread
    report["ms_per_cell_batch1"] = ms_per_cell
    # ru_maxrss is KiB on Linux.
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return report


def print_report(report: dict) -> None:
    t = report["test"]
    low, high = report["cells_per_second_batch64_p10_p90"]
    lines = [
        f"model: {report['architecture']} / {report['task']}  input {report['input_spec']}  "
        f"T={report['temperature']:.3f}  size {report['size_bytes'] / 1e6:.2f} MB  "
        f"runtime {report['runtime']}",
        f"data: {report['data_dir']}",
        f"TEST (n={report['test_n']}): accuracy {t['accuracy']:.4f}  "
        f"balanced {t['balanced_accuracy']:.4f}",
    ]
    if len(report["class_names"]) > 2:
        b = report["test_binary"]
        lines.append(
            f"TEST binary (summed from 4-class): accuracy {b['accuracy']:.4f}  "
            f"balanced {b['balanced_accuracy']:.4f}  ROC AUC {b['roc_auc']:.4f}"
        )
    elif t.get("roc_auc") is not None:
        lines.append(f"TEST ROC AUC {t['roc_auc']:.4f}")
    lines.append(
        "per-class recall: "
        + "  ".join(f"{k} {v['recall']:.3f}" for k, v in t["per_class"].items())
    )
    w = report["test_without_same_cell"]
    extra = f"  binary {w['binary_accuracy']:.4f}" if len(report["class_names"]) > 2 else ""
    lines.append(
        f"TEST without same_cell_in_train (n={w['n']}): accuracy {w['accuracy']:.4f}{extra}"
    )
    if "test_simple" in report:
        s = report["test_simple"]
        extra = f"  binary {s['binary_accuracy']:.4f}" if len(report["class_names"]) > 2 else ""
        lines.append(f"TEST_SIMPLE (n={s['n']}): accuracy {s['accuracy']:.4f}{extra}")
    lines.append(
        f"ECE (15 bins) before temperature {report['ece_before_temperature']:.4f}, "
        f"after {report['ece_after_temperature']:.4f}"
    )
    lines.append(
        f"speed: {report['cells_per_second_batch64']:.0f} cells/s at batch 64 "
        f"(median call; 10-90%: {low:.0f}-{high:.0f}), "
        f"{report['ms_per_cell_batch1']:.2f} ms/cell at batch 1 (median; preparation included)"
    )
    lines.append(f"peak memory (maxrss): {report['peak_rss_mib']:.0f} MiB")
    lines.extend(format_review_flagging(report["review_flagging"], report["review_threshold"], ", on TEST"))
    worst = report.get("test_worst_photographs") or []
    if report.get("test_photographs"):
        photographs = report["test_photographs"]
        lost = sum(row["copies"] * (1 - row["accuracy"]) for row in worst) / report["test_n"]
        wrong_groups = len({row["group"] for row in worst})
        lines.append(
            f"TEST photograph groups mostly right: {photographs - wrong_groups}/{photographs}; "
            f"the {wrong_groups} others cost {lost:.1%} of TEST accuracy:"
        )
        lines.extend(
            f"  {row['group']} {row['label']}: {row['copies']} copies, "
            f"{row['accuracy']:.0%} right, mostly called {row['mostly_called']}"
            for row in worst
        )
    matrix = t["confusion_matrix"]
    lines.append("confusion matrix (rows true, columns predicted): " + json.dumps(matrix))
    print("\n".join(lines))


def stored_model(version):
    """(CellClassifier, review threshold) of a model version in the site's database, "active" or
    an id, computed by the site's runtime (LEUKOSCOPE_INFERENCE_RUNTIME) as its workers compute it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from django.conf import settings

    from webapp.management.commands._model_version_command import ModelVersionCommand
    from webapp.services.model_registry import load_classifier

    model_version = ModelVersionCommand().trained_version(None if version == "active" else int(version))
    classifier = load_classifier(model_version)
    classifier.metadata.setdefault("size_bytes", model_version.size_bytes)
    print(f"Benchmarking v{model_version.pk} ({model_version.architecture}/{model_version.task})")
    return classifier, settings.REVIEW_CONFIDENCE_THRESHOLD


def main(argv=None):
    quiet_tensorflow_startup(os.environ)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    model.add_argument("--model-version", metavar="active|ID",
                       help="a model version stored in the site's database instead of a folder")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--json", help="also write the report as JSON here")
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIMES,
                        help=f"what computes a --model-dir network (default: {DEFAULT_RUNTIME}, the site's "
                        "default, LEUKOSCOPE_INFERENCE_RUNTIME)")
    parser.add_argument("--review-threshold", type=float, default=None,
                        help="the site's LEUKOSCOPE_REVIEW_THRESHOLD, marked in the report (default: 0.8, "
                        "or the site's setting for --model-version)")
    args = parser.parse_args(argv)
    if args.model_version is not None and args.model_version != "active" and not args.model_version.isdigit():
        parser.error(f"--model-version takes 'active' or a version id, not {args.model_version!r}")
    if not Path(args.data).is_dir():
        print(f"dataset not found: {args.data}", file=sys.stderr)
        return 2
    if args.model_version is not None:
        from django.core.management.base import CommandError

        try:
            classifier, review_threshold = stored_model(args.model_version)
        except CommandError as exc:
            print(exc, file=sys.stderr)
            return 2
    else:
        from classifier.inference import CellClassifier

        classifier = CellClassifier.from_directory(args.model_dir, runtime=args.runtime)
        review_threshold = 0.8
    if args.review_threshold is not None:
        review_threshold = args.review_threshold
    try:
        report = run_benchmark(classifier, args.data, review_threshold)
    except (TrainingDataError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
