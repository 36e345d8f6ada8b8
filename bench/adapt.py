"""Adapt to this lab: how far a short fine-tune on k reviewed cells brings a network to a lab it
never saw, and what it costs the lab it was trained on.

    python bench/adapt.py --data DIR --data DIR [--networks DIR] [--ks 25,50,100,200]
                          [--max-test-per-class N] [--folds F] [--epochs E] [--learning-rate LR]
                          [--replay-per-class R]

For each source X given, the network trained without X (bench/sources.py's leave-one-source-out
run, kept in NETWORKS/<the other sources' names joined by "+">, default bench/sources.py's
DEFAULT_RUNS) is adapted on k different cells of X's TRAIN (one copy of an augmented original,
none whose original TEST also shows), drawn stratified by the network's classes (seeded), for
each k.
The cells reach the adaptation as the site's reviewed cells do: each is cut into its 240x320
context window by the code that cuts training windows (classifier.dataset.load_context_windows),
written as a PNG, and handed as (window path, type) to the entry point the site's service calls
(classifier.training.adaptation.adapt_classifier; no database is involved). The adapted network
is measured as bench/classify.py measures one (served runtime) on X's TEST and on the other
sources' TEST, over the four shared leukocyte types. The table gives those accuracies beside the
unadapted network's, and the final fine-tune's seconds (the cross-validation's apart; --folds 0,
the default here, skips it, since X's TEST is the held-out figure).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.classify import default_sources, source_benchmark  # noqa: E402
from bench.sources import DEFAULT_RUNS, four_type_accuracy, source_name  # noqa: E402
from classifier import dataset  # noqa: E402
from classifier.errors import TrainingDataError  # noqa: E402
from classifier.model_folder import is_model_folder, read_model_folder  # noqa: E402
from classifier.runtimes import quiet_tensorflow_startup  # noqa: E402

DEFAULT_KS = (25, 50, 100, 200)
SEED = 20261125


def network_without(folders, target, networks):
    """The run folder of the network trained on every source but ``target``."""
    others = [source_name(folder) for folder in folders if folder != target]
    return Path(networks) / "+".join(others)


def stratified_cells(folder, class_names, k, seed=SEED):
    """k different cells of the folder's TRAIN, as a lab reviews them, spread as evenly as can be
    over the network's classes it holds.

    A lab reviews k cells it photographed, not k views of fewer cells: where TRAIN holds augmented
    copies of each original (blood-cell-images, by originals.csv's group), one seeded copy of an
    original stands for it, and an original that TEST also shows is never drawn, so the adapted
    network is not scored on a cell it was tuned on.
    """
    layout = dataset.resolve_layout(folder)
    task = "8class" if len(class_names) > 4 else ("binary" if len(class_names) == 2 else "4class")
    originals = dataset.read_originals(layout.root)
    images = dataset.list_images(layout.train_dir, task, "TRAIN", originals)
    test_dir = layout.eval_dirs.get("TEST")
    in_test = set()
    if test_dir is not None and originals:
        in_test = {i.group for i in dataset.list_images(test_dir, task, "TEST", originals) if i.group}
    copies = {}  # {class: {cell: its images}}
    for image in images:
        if image.group not in in_test:
            copies.setdefault(image.class_name, {}).setdefault(image.cell_key, []).append(image)
    rng = np.random.default_rng(seed)
    by_class = {name: [cell[rng.integers(len(cell))] for _, cell in sorted(copies[name].items())]
                for name in class_names if name in copies}
    order = {name: rng.permutation(len(members)) for name, members in by_class.items()}
    picked, drawn_cells, round_ = [], set(), 0
    while len(picked) < k and any(round_ < len(members) for members in by_class.values()):
        for name, members in by_class.items():
            if round_ < len(members) and len(picked) < k:
                image = members[order[name][round_]]
                # One photograph filed under two types (two cells in it) is still one review.
                if image.cell_key not in drawn_cells:
                    drawn_cells.add(image.cell_key)
                    picked.append(image)
        round_ += 1
    return picked


def reviewed_windows(images, input_spec, folder):
    """The images as the site keeps reviewed cells: [(context window PNG, type)]."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reviewed = []
    for index, (image, window) in enumerate(
        zip(images, dataset.load_context_windows(images, input_spec), strict=True)
    ):
        if window is None:
            continue
        path = folder / f"cell-{index:04d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(window, cv2.COLOR_RGB2BGR))
        reviewed.append((str(path), image.class_name))
    return reviewed


def capped_test(folder, per_class, into):
    """A folder whose TEST holds at most per_class images of each class (links to the originals)."""
    layout = dataset.resolve_layout(folder)
    test = layout.eval_dirs.get("TEST")
    root = Path(into) / layout.root.name
    for class_dir in sorted(p for p in Path(test).iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())[:per_class]
        (root / "TEST" / class_dir.name).mkdir(parents=True, exist_ok=True)
        for path in files:
            (root / "TEST" / class_dir.name / path.name).symlink_to(path.resolve())
    (root / "TRAIN").symlink_to(layout.train_dir.resolve())
    return root


def measure(classifier, tests):
    """{test source: four-type accuracy} of a CellClassifier."""
    return {name: four_type_accuracy(source_benchmark(classifier, folder, speed=False))
            for name, folder in tests.items()}


def adapt_one(model_bytes, metadata, reviewed, replay, options):
    from classifier.training.adaptation import AdaptationConfig, adapt_classifier

    config = AdaptationConfig(
        model_bytes=model_bytes, metadata=metadata, reviewed=reviewed, data_dir=replay,
        folds=options.folds, epochs=options.epochs, replay_per_class=options.replay_per_class,
        learning_rate=options.learning_rate, evaluate_test=False,
    )
    return adapt_classifier(config)


def run(folders, networks, ks, options, work):
    """[(row dict)] for every source whose network is there; prints which run is missing."""
    from classifier.inference import CellClassifier

    tests = {source_name(f): f for f in folders}
    if options.max_test_per_class:
        tests = {name: capped_test(f, options.max_test_per_class, Path(work) / "tests")
                 for name, f in tests.items()}
    rows = []
    for target in folders:
        name = source_name(target)
        run_dir = network_without(folders, target, networks)
        if not is_model_folder(run_dir):
            print(f"missing run: {run_dir} (the network trained without {name}); "
                  f"make bench-sources trains it. Skipping {name}.", flush=True)
            continue
        model_bytes, metadata = read_model_folder(run_dir)
        replay = [f for f in folders if f != target]
        base = measure(CellClassifier.from_bytes(model_bytes, metadata), tests)
        rows.append({"adapted_to": name, "k": 0, "cells": 0, **{f"test:{t}": a for t, a in base.items()},
                     "seconds": None, "cv": None})
        for k in ks:
            images = stratified_cells(target, metadata["class_names"], k)
            reviewed = reviewed_windows(images, metadata["input_spec"], Path(work) / f"{name}-{k}")
            started = time.monotonic()
            result = adapt_one(model_bytes, metadata, reviewed, replay, options)
            seconds = time.monotonic() - started
            record = result.metrics["adaptation"]
            adapted = measure(CellClassifier.from_bytes(result.model_bytes, result.metadata), tests)
            cv = record.get("cross_validated")
            rows.append({"adapted_to": name, "k": k, "cells": record["cells"],
                         **{f"test:{t}": a for t, a in adapted.items()},
                         "seconds": record["fine_tune_seconds"], "total_seconds": round(seconds, 1),
                         "cv": cv["accuracy"] if cv else None})
            drawn = ", ".join(f"{cls.lower()} {n}" for cls, n in record["per_class"].items())
            print(f"adapted to {name} on k={k} ({drawn}): {record['fine_tune_seconds']:.0f} s", flush=True)
    return rows, list(tests)


def table_lines(rows, tests):
    header = f"{'adapted to':<20}{'k':>5}{'cells':>7}" + "".join(f"{'TEST ' + t:>24}" for t in tests)
    header += f"{'fine-tune s':>13}{'CV on cells':>13}"
    lines = ["4-type accuracy (EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL); k=0: the network "
             "trained without that source, unadapted", header]
    base = {}
    for row in rows:
        if row["k"] == 0:
            base = row
        cells = []
        for test in tests:
            value = row[f"test:{test}"]
            text = "n/a" if value is None else f"{value:.1%}"
            if row["k"] and value is not None and base.get(f"test:{test}") is not None:
                text += f" ({100 * (value - base[f'test:{test}']):+.1f})"
            cells.append(f"{text:>24}")
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.0f}"
        cv = "" if row["cv"] is None else f"{row['cv']:.1%}"
        lines.append(f"{row['adapted_to']:<20}{row['k']:>5}{row['cells']:>7}" + "".join(cells)
                     + f"{seconds:>13}{cv:>13}")
    return lines


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", metavar="DIR",
                        help="a source's data folder (TRAIN/ and TEST/); repeat for each (default: the "
                        "shared datasets' blood-cell-images and pbc)")
    parser.add_argument("--networks", default=str(DEFAULT_RUNS),
                        help="bench/sources.py's run folders "
                        f"(default: {DEFAULT_RUNS.relative_to(ROOT)})")
    parser.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)),
                        help="reviewed cells per adaptation, comma-separated (default: 25,50,100,200)")
    parser.add_argument("--max-test-per-class", type=int, default=None,
                        help="measure on at most this many TEST images per class (a quick run)")
    parser.add_argument("--folds", type=int, default=0, help="cross-validation folds (default 0: none)")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tune epochs (default: the site's)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="fine-tune learning rate (default: the site's share of the recipe's)")
    parser.add_argument("--replay-per-class", type=int, default=None,
                        help="replayed TRAIN images per class of the network's sources (default: the site's)")
    return parser


def main(argv=None):
    quiet_tensorflow_startup(os.environ)
    from classifier.training import adaptation

    args = build_parser().parse_args(argv)
    args.epochs = args.epochs or adaptation.DEFAULT_EPOCHS
    args.replay_per_class = args.replay_per_class or adaptation.REPLAY_PER_CLASS
    folders = args.data or [str(path) for path in default_sources()]
    if len(folders) < 2 or any(not Path(folder).is_dir() for folder in folders):
        print(f"need two or more data folders; not found or too few: {', '.join(folders) or 'none'}",
              file=sys.stderr)
        return 2
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as work:
        try:
            rows, tests = run(folders, args.networks, ks, args, work)
        except TrainingDataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if not rows:
        print("no network to adapt: every run folder is missing", file=sys.stderr)
        return 2
    print("\n".join(table_lines(rows, tests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
