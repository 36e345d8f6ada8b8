"""The images a training run learns from, and the arrays it trains and validates on.

A run learns from one or more data folders, its sources (one lab's photographs each, such as
blood-cell-images and pbc). Each source's TRAIN images (subsampled when the recipe asks) are split
into training and validation on their own: by original photograph where the folder's
originals.csv names them (classifier.dataset keeps each photograph's copies on one side), else by
file. Reviewed cells a run adds join the training side. Every image is prepared once into network
input at the views training needs, one source at a time, so that classifier.dataset's cache of a
source serves every run that uses it, alone or beside others.
"""

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier import dataset
from classifier.errors import TrainingDataError
from classifier.training.augmentation import training_margin

SPLIT_BY_GROUP = "by original photograph (originals.csv group)"
SPLIT_BY_FILE = "by file"


@dataclass(frozen=True)
class Source:
    """One data folder of a run, its TRAIN images and their split, before any is decoded."""

    name: str  # the folder's name, made unique within the run
    layout: dataset.DatasetLayout
    originals: dict  # classifier.dataset.read_originals of the folder
    all_train: list  # every TRAIN image the run may use (dataset.LabelledImage)
    train: list
    validation: list

    @property
    def split_rule(self):
        return SPLIT_BY_GROUP if self.originals else SPLIT_BY_FILE


@dataclass(frozen=True)
class ImageSelection:
    """Which images a run trains and validates on, before any is decoded."""

    sources: list  # Source, in the order given
    extras: list  # reviewed cells, context windows with a reviewer's label

    @property
    def all_train(self):
        return [image for source in self.sources for image in source.all_train]


@dataclass(frozen=True)
class TrainingArrays:
    """uint8 network inputs and class indices; training inputs carry the augmentation margin."""

    class_names: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_counts: dict  # training images per class, after the split and unreadable files
    skipped: int  # files that did not decode, or decoded without colour (dataset.decode_image)
    skipped_named: list  # the first of them, with why (dataset.SkippedFiles)
    margin: float
    validation_groups: int
    source_names: list  # the sources', in order; reviewed cells are the source after them
    train_sources: np.ndarray  # per training row, the index of its source
    val_sources: np.ndarray  # per validation row, the index of its source


def data_folders(data):
    """The data folders of a run: one path, several separated by os.pathsep (as PATH lists
    folders, and as LEUKOSCOPE_TRAINING_DATA and a version's dataset_path hold them), or a list."""
    if data is None:
        return []
    if isinstance(data, str | os.PathLike):
        return [part for part in str(data).split(os.pathsep) if part.strip()]
    return [str(part) for part in data if str(part).strip()]


def absolute_folders(folders):
    """Data folders given on a command line, from /: a run records them, and a relative path is
    read from whichever folder a later process (a worker adapting the version, `evaluate` run
    elsewhere) starts in."""
    expanded = [os.path.expanduser(folder) for folder in folders]
    return [folder if os.path.isabs(folder) else os.path.abspath(folder) for folder in expanded]


def found_folders(data, elsewhere=()):
    """(the data folders of ``data`` on this machine, those not): a folder missing where it was is
    looked for among ``elsewhere`` (the folders configured, or those benchmarked) by its name, as a
    version's recorded folders are read on another machine or after a move."""
    by_name = {Path(folder).name: folder for folder in elsewhere}
    present, missing = [], []
    for folder in data_folders(data):
        if Path(folder).expanduser().is_dir():
            present.append(folder)
        elif Path(folder).name in by_name and Path(by_name[Path(folder).name]).expanduser().is_dir():
            present.append(by_name[Path(folder).name])
        else:
            missing.append(folder)
    return present, missing


def real_folder(folder):
    """The folder ``folder`` names, however written (a trailing slash, ~, a link)."""
    return Path(folder).expanduser().resolve()


def check_each_folder_once(folders):
    """Raise TrainingDataError where two of ``folders`` are one folder however written (a trailing
    slash, ~, a link): each would be a source of its own, its images trained on twice, and an image
    of one copy's training split could sit in the other's validation split."""
    seen = {}
    for folder in folders:
        real = real_folder(folder)
        if real in seen:
            raise TrainingDataError(f"the data folder {seen[real]} is given twice (again as {folder}): "
                                    "give each folder once")
        seen[real] = folder


def distinct_folders(folders):
    """``folders`` with each folder once, however written, as first written."""
    first_written = {}
    for folder in folders:
        first_written.setdefault(real_folder(folder), folder)
    return list(first_written.values())


def same_folders(given, recorded):
    """Whether two lists of data folders name the same folders, in any order: by where each
    resolves or, for a recorded folder not on this machine (the run made on another), by name."""
    if len(given) != len(recorded):
        return False
    unmatched = [real_folder(folder) for folder in given]
    for folder in recorded:
        path = real_folder(folder)
        if path in unmatched:
            unmatched.remove(path)
            continue
        namesake = None if path.exists() else next((g for g in unmatched if g.name == path.name), None)
        if namesake is None:
            return False
        unmatched.remove(namesake)
    return True


def source_names(folders):
    """Each folder's name, numbered where two folders share one."""
    names = []
    for folder in folders:
        name = real_folder(folder).name or str(folder)
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    return names


def check_weights_name_folders(weights, folders):
    """Refuse (TrainingDataError) source weights that name no data folder of the run: a folder not
    named weighs 1, so a misspelt name ({"pbcc": 2}) was dropped unsaid, and stored with the
    version as if it had weighed."""
    names = source_names(folders)
    unknown = sorted(set(weights or {}) - set(names))
    if unknown:
        raise TrainingDataError(
            f"the source weights name {', '.join(map(repr, unknown))}, which is no data folder of this "
            f"run: its folders are named {', '.join(map(repr, names))}")


def subsample(images, max_per_class, seed):
    """At most max_per_class images of each class, picked at random (None: all)."""
    if not max_per_class:
        return images
    rng = np.random.default_rng(seed)
    kept = []
    for name in sorted({i.class_name for i in images}):
        members = [i for i in images if i.class_name == name]
        if len(members) > max_per_class:
            picks = sorted(rng.choice(len(members), size=max_per_class, replace=False))
            members = [members[k] for k in picks]
        kept.extend(members)
    return kept


def train_folder_images(layout, originals, task, max_per_class, seed):
    """The images of the data's TRAIN folder (or root), subsampled as the run asked."""
    split_name = "TRAIN" if layout.train_dir != layout.root else ""
    images = dataset.list_images(layout.train_dir, task, split_name, originals)
    return subsample(images, max_per_class, seed)


def extra_images(extra_samples, task):
    """Reviewed cells [(path to a context window, class)] as labelled images of the task. A third
    item, where given, is the cell's group: its photograph (cells of one photograph share it), kept
    together where cells are split; without it each cell is its own."""
    images = []
    for path, name, *group in extra_samples:
        mapped = dataset.task_class(str(name), task)
        if mapped is None:
            raise TrainingDataError(f"reviewed cell {path} has class {name!r}, not one of {task}")
        images.append(
            dataset.LabelledImage(
                path=str(path),
                class_name=mapped,
                split="EXTRA",
                group=str(group[0]) if group and group[0] is not None else str(path),
                is_window=True,
            )
        )
    return images


def labels(images, class_names):
    """Class indices of images, in class_names order."""
    index = {name: k for k, name in enumerate(class_names)}
    return np.array([index[i.class_name] for i in images], dtype=np.int64)


def decoded_rows(all_train, images, ok):
    """Row numbers of images in all_train's prepared arrays, those that did not decode left out."""
    row = {image.path: k for k, image in enumerate(all_train)}
    rows = np.array([row[image.path] for image in images], dtype=np.int64)
    return rows[ok[rows]]


def check_data_folder(folder, task):
    """(the folder's layout (dataset.DatasetLayout), its TRAIN images of the task), or
    TrainingDataError with the reason a run of the task would refuse it: no TRAIN/ or class folders,
    none of the task's classes among them, no image in those, or a split none of whose images is a
    photograph (errors.UnreadableFolder, as check_readable refuses it: the site's runs and
    `manage.py train`'s measure TEST). What select_sources and check_readable read of each folder,
    before anything is decoded; the site and `manage.py train` ask it before they store a version."""
    layout = dataset.resolve_layout(folder)
    images = train_folder_images(layout, {}, task, None, 0)
    if not images:
        raise _holds_no_images(layout, task)
    check_folder_readable(layout, images, task)
    return layout, images


def check_class_counts_together(checked, task, min_per_class):
    """What a run of the task would find of each class in these folders' TRAIN images together
    (``checked``: check_data_folder's answers; select_images' check: each folder may hold some of
    the classes, as PBC holds eight and BCCD four), or TrainingDataError naming the classes with
    too few."""
    where = [str(layout.train_dir) for layout, _ in checked]
    return dataset.check_class_counts(
        [image for _, images in checked for image in images], task, min_per_class,
        f"training data folder{'s' if len(where) > 1 else ''} {' and '.join(where)}")


def _holds_no_images(layout, task):
    return TrainingDataError(f"training data folder {layout.train_dir} holds no images for the {task} task"
                             f"{dataset.nested_images_hint(layout.train_dir, task)}")


def select_sources(data, task, max_per_class, seed, validation_fraction, split_seed):
    """Every data folder's TRAIN images, each split on its own into training and validation (a
    validation_fraction of 0 keeps every image for training)."""
    folders = data_folders(data)
    if not folders:
        raise TrainingDataError("no training data folder was given")
    check_each_folder_once(folders)
    sources = []
    for name, folder in zip(source_names(folders), folders, strict=True):
        layout = dataset.resolve_layout(folder)
        originals = dataset.read_originals(layout.root)
        all_train = train_folder_images(layout, originals, task, max_per_class, seed)
        if not all_train:
            raise _holds_no_images(layout, task)
        if validation_fraction > 0:
            train, validation = dataset.split_validation(all_train, validation_fraction, split_seed)
        else:
            train, validation = all_train, []
        sources.append(Source(name, layout, originals, all_train, train, validation))
    return sources


def check_readable(sources, task, measured=True):
    """Refuse (TrainingDataError, naming the folder) a source whose TRAIN images, or where the run
    is ``measured`` on them any of whose TEST or TEST_SIMPLE images, hold no photograph
    (dataset.check_some_readable): a TEST folder of git-lfs pointers failed a run only after its
    last epoch. A split of photographs costs one header read."""
    for source in sources:
        check_folder_readable(source.layout, source.all_train, task, measured)


def check_folder_readable(layout, train_images, task, measured=True):
    """check_readable of one data folder (``layout``), whose TRAIN images are ``train_images``."""
    dataset.check_some_readable(train_images, layout.train_dir)
    if measured:
        for split, folder in layout.eval_dirs.items():
            dataset.check_some_readable(dataset.list_images(folder, task, split), folder)


def select_images(config, recipe):
    """The run's sources, their training and validation images, and the reviewed cells; a source
    with a split of no photograph refused (check_readable)."""
    fraction = 0.0 if recipe.refit else recipe.validation_fraction
    check_weights_name_folders(recipe.source_weights, data_folders(config.data_dir))
    sources = select_sources(
        config.data_dir, recipe.task, recipe.max_images_per_class, recipe.seed, fraction,
        recipe.split_seed,
    )
    where = " and ".join(str(source.layout.train_dir) for source in sources)
    dataset.check_class_counts(
        [image for source in sources for image in source.all_train],
        recipe.task,
        config.min_images_per_class,
        f"training data folder{'s' if len(sources) > 1 else ''} {where}",
    )
    check_readable(sources, recipe.task, config.evaluate_test)
    return ImageSelection(sources, extra_images(config.extra_samples, recipe.task))


@dataclass
class _Rows:
    """Arrays gathered source by source."""

    x: list
    y: list
    source: list

    def add(self, inputs, images, class_names, source_index):
        self.x.append(inputs)
        self.y.append(labels(images, class_names))
        self.source.append(np.full(len(images), source_index, dtype=np.int64))

    def arrays(self, shape):
        if not self.x:
            return np.zeros((0, *shape), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(self.x), np.concatenate(self.y), np.concatenate(self.source)


def load_arrays(selection, recipe, config):
    """Decode and prepare the selection (from the cache where it can) into training arrays."""
    margin = training_margin(recipe)
    load = dict(window_scale=recipe.window_scale, cache_dir=config.cache_dir, workers=config.workers)
    # Whole-folder loads are cached once for any seed; the split picks rows out of them. A refit
    # validates on nothing, so it needs only the training view.
    margins = [margin] if recipe.refit else sorted({margin, 1.0})
    class_names = recipe.class_names
    train, val = _Rows([], [], []), _Rows([], [], [])
    skipped, groups = dataset.SkippedFiles(), set()
    for index, source in enumerate(selection.sources):
        loaded = dataset.load_prepared_margins(source.all_train, recipe.input_spec, margins, **load)
        at_margin, ok_at_margin, _ = loaded[margin]
        unaugmented, ok_unaugmented, _ = loaded.get(1.0, loaded[margin])
        skipped.add(source.all_train, ok_at_margin)
        rows = decoded_rows(source.all_train, source.train, ok_at_margin)
        train.add(at_margin[rows], [source.all_train[k] for k in rows], class_names, index)
        rows = decoded_rows(source.all_train, source.validation, ok_unaugmented)
        val.add(unaugmented[rows], [source.all_train[k] for k in rows], class_names, index)
        groups.update(source.all_train[k].cell_key for k in rows)
    if selection.extras:
        # The lab's reviewed cells: a list of its own each run, not worth a file in the cache.
        inputs, ok, _ = dataset.load_prepared(selection.extras, recipe.input_spec, margin, **load, keep=False)
        skipped.add(selection.extras, ok)
        kept = [image for image, good in zip(selection.extras, ok, strict=True) if good]
        train.add(inputs[ok], kept, class_names, len(selection.sources))
    x_train, y_train, train_sources = train.arrays(_shape(recipe, margin))
    x_val, y_val, val_sources = val.arrays(_shape(recipe, 1.0))
    if len(x_val) == 0 and not recipe.refit:
        # Tiny data: validate on training images, not on nothing.
        x_val, y_val, val_sources = _unaugmented_training_rows(selection, recipe, load, class_names)
    return TrainingArrays(
        class_names=class_names,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        class_counts=_class_counts(y_train, class_names),
        skipped=skipped.count,
        skipped_named=skipped.named,
        margin=margin,
        validation_groups=len(groups),
        source_names=[source.name for source in selection.sources],
        train_sources=train_sources,
        val_sources=val_sources,
    )


def _shape(recipe, margin):
    spec = recipe.input_spec
    if spec.get("mode") == "cell":
        side = int(round(int(spec["height"]) * margin))
        return (side, side, 3)
    return (int(spec["height"]), int(spec["width"]), 3)


def _unaugmented_training_rows(selection, recipe, load, class_names):
    rows = _Rows([], [], [])
    for index, source in enumerate(selection.sources):
        inputs, ok, _ = dataset.load_prepared(source.all_train, recipe.input_spec, 1.0, **load)
        picked = decoded_rows(source.all_train, source.train, ok)
        rows.add(inputs[picked], [source.all_train[k] for k in picked], class_names, index)
    return rows.arrays(_shape(recipe, 1.0))


def _class_counts(y_train, class_names):
    counts = Counter(class_names[k] for k in y_train)
    class_counts = {name: int(counts.get(name, 0)) for name in class_names}
    too_few = [f"{n}: {c}" for n, c in class_counts.items() if c < 1]
    if too_few:
        raise TrainingDataError(
            "after setting aside the validation split and skipping unusable files, some "
            "classes have no training images left: " + ", ".join(too_few)
        )
    return class_counts
