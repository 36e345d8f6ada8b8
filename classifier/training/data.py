"""The images a training run learns from, and the arrays it trains and validates on.

The data folder's TRAIN images (subsampled when the recipe asks) are split by original photograph
into training and validation (classifier.dataset keeps each photograph's copies on one side), the
reviewed cells a run adds join the training side, and every image is prepared once into network
input at the views training needs (classifier.dataset caches the arrays between runs).
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np

from classifier import dataset
from classifier.errors import TrainingDataError
from classifier.training.augmentation import training_margin


@dataclass(frozen=True)
class ImageSelection:
    """Which images a run trains and validates on, before any is decoded."""

    layout: dataset.DatasetLayout
    originals: dict  # classifier.dataset.read_originals of the data folder
    all_train: list  # every TRAIN image the run may use (dataset.LabelledImage)
    train: list
    validation: list
    extras: list  # reviewed cells, context windows with a reviewer's label


@dataclass(frozen=True)
class TrainingArrays:
    """uint8 network inputs and class indices; training inputs carry the augmentation margin."""

    class_names: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_counts: dict  # training images per class, after the split and unreadable files
    skipped: int  # files that did not decode
    margin: float
    validation_groups: int


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
    """Reviewed cells [(path to a context window, class)] as labelled images of the task."""
    images = []
    for path, name in extra_samples:
        mapped = dataset.task_class(str(name), task)
        if mapped is None:
            raise TrainingDataError(f"reviewed cell {path} has class {name!r}, not one of {task}")
        images.append(
            dataset.LabelledImage(
                path=str(path),
                class_name=mapped,
                folder_class=str(name).upper(),
                split="EXTRA",
                group=str(path),
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


def select_images(config, recipe):
    """The run's training and validation images (by original photograph) and reviewed cells."""
    layout = dataset.resolve_layout(config.data_dir)
    originals = dataset.read_originals(layout.root)
    all_train = train_folder_images(
        layout, originals, recipe.task, recipe.max_images_per_class, recipe.seed
    )
    dataset.check_class_counts(
        all_train,
        recipe.task,
        config.min_images_per_class,
        f"training data folder {layout.train_dir}",
    )
    if recipe.refit:
        train, validation = all_train, []
    else:
        train, validation = dataset.split_validation(
            all_train, recipe.validation_fraction, recipe.split_seed
        )
    extras = extra_images(config.extra_samples, recipe.task)
    return ImageSelection(layout, originals, all_train, train, validation, extras)


def load_arrays(selection, recipe, config):
    """Decode and prepare the selection (from the cache where it can) into training arrays."""
    margin = training_margin(recipe)
    load = dict(window_scale=recipe.window_scale, cache_dir=config.cache_dir, workers=config.workers)
    # Whole-folder loads are cached once for any seed; the split picks rows out of them. A refit
    # validates on nothing, so it needs only the training view.
    margins = [margin] if recipe.refit else sorted({margin, 1.0})
    all_train = selection.all_train
    loaded = dataset.load_prepared_margins(all_train, recipe.input_spec, margins, **load)
    inputs_at_margin, ok_at_margin, _ = loaded[margin]
    inputs_unaugmented, ok_unaugmented, _ = loaded.get(1.0, loaded[margin])
    skipped = int((~ok_at_margin).sum())
    class_names = recipe.class_names
    train_rows = decoded_rows(all_train, selection.train, ok_at_margin)
    val_rows = decoded_rows(all_train, selection.validation, ok_unaugmented)
    x_train = inputs_at_margin[train_rows]
    y_train = labels([all_train[k] for k in train_rows], class_names)
    if selection.extras:
        extra_inputs, extra_ok, _ = dataset.load_prepared(
            selection.extras, recipe.input_spec, margin, **load
        )
        skipped += int((~extra_ok).sum())
        kept = [image for image, ok in zip(selection.extras, extra_ok, strict=True) if ok]
        x_train = np.concatenate([x_train, extra_inputs[extra_ok]])
        y_train = np.concatenate([y_train, labels(kept, class_names)])
    x_val = inputs_unaugmented[val_rows]
    y_val = labels([all_train[k] for k in val_rows], class_names)
    if len(x_val) == 0 and not recipe.refit:  # tiny data: validate on training images, not on nothing
        x_val, y_val = inputs_unaugmented[train_rows], y_train[: len(train_rows)]
    return TrainingArrays(
        class_names=class_names,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        class_counts=_class_counts(y_train, class_names),
        skipped=skipped,
        margin=margin,
        validation_groups=len({all_train[k].group or all_train[k].path for k in val_rows}),
    )


def _class_counts(y_train, class_names):
    counts = Counter(class_names[k] for k in y_train)
    class_counts = {name: int(counts.get(name, 0)) for name in class_names}
    too_few = [f"{n}: {c}" for n, c in class_counts.items() if c < 1]
    if too_few:
        raise TrainingDataError(
            "after setting aside the validation split and skipping unreadable files, some "
            "classes have no training images left: " + ", ".join(too_few)
        )
    return class_counts
