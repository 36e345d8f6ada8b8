"""Labelled cell images on disk: layout checks, the group-held-out validation split, decoding,
locating the cell, and an on-disk cache of the prepared arrays so decoding happens once.

Layout: ``ROOT/SPLIT/CLASS/*.jpeg`` (also .jpg/.png), or a folder that directly holds ``CLASS/``
subfolders. ``ROOT/originals.csv`` (blood-cell-images) names each image's original photograph
and group; the validation split keeps whole groups on one side, since copies of one original on
both sides overstate accuracy (see shared/datasets/README.md).
"""

import csv
import hashlib
import inspect
import json
import os
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from classifier import detection, quality, rendering
from classifier.errors import TrainingDataError, UnreadableFolder, UnreadablePhotograph
from classifier.labels import BINARY_CLASSES, BINARY_GROUP, EIGHT_CLASSES, TASK_CLASSES
from classifier.photograph_size import MAX_PHOTOGRAPH_PIXELS
from classifier.preparation import WINDOW_SIZE, as_window, prepare_window

# Those the site takes in an upload (webapp.intake): a lab's microscope that writes TIFF trains on them too.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp", ".webp")
EVAL_SPLITS = ("TEST", "TEST_SIMPLE")
CACHE_VERSION = "1"
CACHE_VARIABLE = "LEUKOSCOPE_CLASSIFIER_CACHE"


def default_cache_dir(environ=os.environ):
    """Where prepared inputs are cached: LEUKOSCOPE_CLASSIFIER_CACHE, else the instance's var folder
    (LEUKOSCOPE_VAR_DIR, as the site's other files), else the checkout's var/, so that a release
    folder that is read-only in production is never written."""
    if environ.get(CACHE_VARIABLE):
        return Path(environ[CACHE_VARIABLE])
    var_dir = environ.get("LEUKOSCOPE_VAR_DIR") or Path(__file__).resolve().parent.parent / "var"
    return Path(var_dir) / "cache"


DEFAULT_CACHE_DIR = default_cache_dir()


@dataclass(frozen=True)
class LabelledImage:
    path: str
    class_name: str  # in the task's classes
    split: str
    group: str | None = None
    same_cell_in_train: bool = False
    is_window: bool = False  # already a context window centred on the cell (reviewed cells)

    @property
    def cell_key(self):
        """The photographed cell this image shows: its originals.csv group (augmented copies of
        one photograph share it), else the file itself."""
        return self.group or self.path


@dataclass(frozen=True)
class DatasetLayout:
    root: Path
    train_dir: Path
    eval_dirs: dict  # split name -> folder


KNOWN_TYPES = frozenset({*EIGHT_CLASSES, *BINARY_CLASSES})

# Names a lab's folders give a type that are not the type's own: said as a hint beside a folder
# left out, never read as the type unasked (a lab may keep band neutrophils, or metamyelocytes,
# apart on purpose).
TYPE_HINTS = {
    **dict.fromkeys(("IG", "IGS", "PROMYELOCYTE", "MYELOCYTE", "METAMYELOCYTE"), "IMMATURE_GRANULOCYTE"),
    **dict.fromkeys(("BAND", "BANDS", "SEG", "SEGS", "SEGMENTED", "NEUT", "NEUTRO", "NEU"), "NEUTROPHIL"),
    **dict.fromkeys(("LYMPH", "LYMPHO", "LYM"), "LYMPHOCYTE"),
    **dict.fromkeys(("MONO", "MON"), "MONOCYTE"),
    **dict.fromkeys(("EOS", "EO", "EOSINO"), "EOSINOPHIL"),
    **dict.fromkeys(("BASO", "BAS"), "BASOPHIL"),
    **dict.fromkeys(("NRBC", "NRBCS", "ERB", "NORMOBLAST", "NUCLEATED_RED_CELL"), "ERYTHROBLAST"),
    **dict.fromkeys(("PLT", "PLTS", "THROMBOCYTE", "THROMBOCYTES"), "PLATELET"),
}


def type_of_folder(folder_name):
    """The cell type a class folder's name spells, in any case, plural, with spaces or hyphens
    for underscores ("immature granulocytes" is IMMATURE_GRANULOCYTE); else the name in upper
    case."""
    name = "_".join(folder_name.strip().upper().replace("-", " ").split())
    if name not in KNOWN_TYPES and name.endswith("S") and name[:-1] in KNOWN_TYPES:
        return name[:-1]
    return name


def task_class(folder_name, task):
    """The task class of a folder's class name, or None when it has no place in the task."""
    # Imported here: the training package imports this module.
    from classifier.training.recipe import check_task

    check_task(task)
    name = type_of_folder(folder_name)
    if task == "binary":
        if name in BINARY_CLASSES:
            return name
        return BINARY_GROUP.get(name)
    return name if name in TASK_CLASSES[task] else None


def _class_folders(folder):
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder):
    """The photographs of a folder, by name: the extensions a photograph has, hidden files left out."""
    # A hidden file is never a photograph: macOS writes "._NAME.jpg" beside each file it copies to
    # a foreign disk, which counted as an image of the class and then failed to decode.
    return sorted(
        p for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def resolve_layout(data_dir, kind="training data"):
    """Find TRAIN (and TEST, TEST_SIMPLE) under data_dir, or take data_dir as one split; ``kind``:
    what the folder is to its reader ("data" where it is only measured on)."""
    if data_dir is None or str(data_dir).strip() == "":
        raise TrainingDataError(f"no {kind} folder was given")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise TrainingDataError(f"{kind} folder {root} does not exist")
    if not root.is_dir():
        raise TrainingDataError(f"{kind} path {root} is a file, not a folder")
    folders = _class_folders(root)
    # TRAIN/ and TEST/ in any case, as the class folders are (a lab's "Test/" was passed by).
    splits = {}
    for folder in folders:  # by name: TRAIN/ itself comes before a Train/ beside it
        splits.setdefault(folder.name.upper(), folder)
    if "TRAIN" in splits:
        eval_dirs = {split: splits[split] for split in EVAL_SPLITS if split in splits}
        return DatasetLayout(root=root, train_dir=splits["TRAIN"], eval_dirs=eval_dirs)
    if not folders:
        loose = image_files(root)
        hint = f" ({len(loose)} images lie loose in it)" if loose else ""
        raise TrainingDataError(
            f"{root} is not a folder-per-class layout{hint}: expected TRAIN/CLASS/*.jpeg or "
            "CLASS/*.jpeg subfolders such as EOSINOPHIL/, LYMPHOCYTE/, MONOCYTE/, NEUTROPHIL/"
        )
    return DatasetLayout(root=root, train_dir=root, eval_dirs={})


def read_originals(root):
    """(split, folder class, file name) -> (group, same_cell_in_train) from originals.csv."""
    path = Path(root) / "originals.csv"
    table = {}
    if not path.is_file():
        return table
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["split"], row["class"].upper(), row["file"])
            table[key] = (row.get("group") or row.get("original"), row.get("same_cell_in_train"))
    return table


def folders_outside_task(split_dir, task):
    """The class folders under split_dir that have no place in the task (PBC's BASOPHIL/ for a
    four-type task): list_images passes them by."""
    return [folder for folder in _class_folders(split_dir) if task_class(folder.name, task) is None]


def _images_in_subfolders(folder):
    return sum(len(image_files(sub)) for sub in _class_folders(folder))


def _held(count, nested):
    """What a class folder holds, in words: its ``count`` images, or the ``nested`` ones its
    subfolders keep, which are not read (a lab's NEUTROPHIL/slide1/)."""
    if count:
        return f"{count} image{'s' if count != 1 else ''}"
    return f"no images; {nested} in its subfolders, which are not read" if nested else "no images"


def nested_images_hint(split_dir, task):
    """Where the task's class folders under split_dir hold no images of their own but their
    subfolders do (NEUTROPHIL/slide1/), a clause saying so; else ""."""
    nested = {folder.name: count for folder in _class_folders(split_dir)
              if task_class(folder.name, task) and not image_files(folder)
              and (count := _images_in_subfolders(folder))}
    if not nested:
        return ""
    where = ", ".join(f"{name}/ {count}" for name, count in nested.items())
    return (f": its class folders keep their images in subfolders ({where}), which are not read; move "
            "them up into the class folder")


def left_out_note(split_dir, task, left_out_of="this training"):
    """The sentence naming the class folders under split_dir that the task has no type for, with what
    each holds and, where its name is another for one of the task's types (IG/), that type; "" where
    none. A folder of no cell type without images is only counted: a data folder typed on the site
    may hold a server's folders, never its photographs."""
    parts, others = [], 0
    for folder in folders_outside_task(split_dir, task):
        count = len(image_files(folder))
        nested = 0 if count else _images_in_subfolders(folder)
        name = type_of_folder(folder.name)
        if not (count or nested or name in KNOWN_TYPES):
            others += 1
            continue
        held = _held(count, nested)
        hint = TYPE_HINTS.get(name)
        if hint and task_class(hint, task):
            held += f"; rename it {hint}/ to count its cells as that type"
        parts.append(f"{folder.name}/ ({held})")
    if others:
        parts.append(f"{others} other folder{'s' if others != 1 else ''} without images")
    if not parts:
        return ""
    return (f"{split_dir} also holds {', '.join(parts)}: not types of the {task} task, left out of "
            f"{left_out_of}.")


def list_images(split_dir, task, split, originals=None):
    """Every image under split_dir/CLASS/, labelled with the task's class names."""
    originals = originals or {}
    images = []
    unknown = []
    for folder in _class_folders(split_dir):
        name = task_class(folder.name, task)
        if name is None:
            unknown.append(folder.name)
            continue
        for path in image_files(folder):
            group, same = originals.get((split, folder.name.upper(), path.name), (None, None))
            images.append(
                LabelledImage(
                    path=str(path),
                    class_name=name,
                    split=split,
                    group=group,
                    same_cell_in_train=(same == "yes"),
                )
            )
    if unknown and not images:
        # A mistyped folder may be any directory (the walkthrough's /etc): the count says what was
        # found, without naming a server's folders to whoever reads the reason on the site.
        raise TrainingDataError(
            f"{split_dir} has {len(unknown)} folder{'s' if len(unknown) != 1 else ''} but none "
            f"named for one of the {task} task's classes ({', '.join(TASK_CLASSES[task])})"
        )
    return images


def evaluation_folder(data_dir, split="TEST"):
    """(data_dir's layout, the folder evaluating on its ``split`` measures, the split that folder is:
    "" for a folder of class folders alone, measured whole); TrainingDataError where there is none."""
    layout = resolve_layout(data_dir, "data")
    folder = layout.eval_dirs.get(split) or (layout.root / split)
    if Path(folder).is_dir():
        return layout, folder, split
    if layout.train_dir == layout.root:
        return layout, layout.root, ""
    raise TrainingDataError(f"{data_dir} has no {split} folder")


def evaluation_images(data_dir, task, split="TEST"):
    """(images, split) that evaluating a network of ``task`` on data_dir measures (evaluation_folder);
    TrainingDataError saying what is wrong with the folder. No network is needed to check one
    (manage.py evaluate checks each before TensorFlow loads)."""
    layout, folder, split = evaluation_folder(data_dir, split)
    images = list_images(folder, task, split, read_originals(layout.root))
    if not images:
        raise TrainingDataError(
            f"{folder} holds no images for the {task} task{nested_images_hint(folder, task)}")
    check_some_readable(images, folder)
    return images, split


def check_class_counts(images, task, min_per_class, where):
    counts = Counter(image.class_name for image in images)
    if not images:
        raise TrainingDataError(f"{where} holds no images (.jpeg, .jpg or .png)")
    too_few = [
        f"{name}: {counts.get(name, 0)}"
        for name in TASK_CLASSES[task]
        if counts.get(name, 0) < min_per_class
    ]
    if too_few:
        raise TrainingDataError(
            f"too few images per class in {where} (need at least {min_per_class} of each): "
            + ", ".join(too_few)
        )
    return {name: int(counts.get(name, 0)) for name in TASK_CLASSES[task]}


def split_validation(images, fraction=0.15, seed=0):
    """(train, validation): whole groups go to one side, chosen per class (stratified).

    Without groups (no originals.csv) each file is its own group.
    """
    groups = defaultdict(list)
    for image in images:
        groups[image.cell_key].append(image)
    by_class = defaultdict(list)
    for key, members in groups.items():
        majority = Counter(m.class_name for m in members).most_common(1)[0][0]
        by_class[majority].append(key)
    rng = random.Random(seed)
    validation_keys = set()
    for name in sorted(by_class):
        keys = sorted(by_class[name])
        rng.shuffle(keys)
        total = sum(len(groups[k]) for k in keys)
        taken = 0
        for key in keys[:-1]:  # always leave at least one group for training
            if taken >= fraction * total:
                break
            validation_keys.add(key)
            taken += len(groups[key])
    train = [i for i in images if i.cell_key not in validation_keys]
    validation = [i for i in images if i.cell_key in validation_keys]
    return train, validation


def looks_like_photograph(path):
    """Whether a file's header is that of an image (Pillow identifies it by its content, the
    extension aside) at least 8 pixels a side: nothing is decoded, about 0.15 ms a file. A git-lfs
    pointer, a renamed HEIC file or an empty file is not; a file whose header reads but whose data
    do not decode still is (decode_image tells those)."""
    try:
        with Image.open(path) as image:
            return min(image.size) >= 8
    except Image.DecompressionBombError:
        return True  # an image all the same, larger than Pillow opens unasked
    except (OSError, ValueError):
        return False


def unreadable_folder(count, folder):
    """The reason a split none of whose ``count`` images is a photograph is refused."""
    return UnreadableFolder(unreadable_reason(folder, count), folder)


def unreadable_reason(folder, count=None):
    """Why ``folder`` is refused, its images' ``count`` said where given (the site's form says none
    of a typed folder's)."""
    images = "the images" if count is None else f"the {count} images"
    return (f"none of {images} in {folder} could be read as a photograph: replace them with the "
            "photographs, or remove the folder")


def check_some_readable(images, folder):
    """Raise TrainingDataError naming ``folder`` where none of its images looks like a photograph
    (looks_like_photograph), before a run spends an hour on what it cannot measure or learn from.
    It stops at the first that does, so a folder of photographs costs one header read; a folder
    where only some are unreadable passes, and those are skipped and counted as they are decoded."""
    if images and not any(looks_like_photograph(image.path) for image in images):
        raise unreadable_folder(len(images), folder)


def decode_image(path):
    """RGB uint8 array, or None when the file cannot be used as a photograph (skipped_because says why).

    Decoded as the site decodes a photograph it classifies (classifier.rendering.decode_rgb, upright
    as stored): read by OpenCV instead, a photograph with transparent pixels was learned with them
    black where the site shows them white, and 0.2 ms a photograph is all OpenCV saved. One without
    colour is refused as upload refuses it (webapp.intake): learnt from, it taught the network a
    cell without its stain, which no lab's upload can then show it. One over upload's pixel limit
    (photograph_size.MAX_PHOTOGRAPH_PIXELS) is refused from its header, before it is decoded.
    """
    return _decoded(path)[0]


def skipped_because(path):
    """Why decode_image gave no photograph for ``path``, in words (read again: only skipped files are)."""
    return _decoded(path)[1] or "could not be read then; it reads now"


def _decoded(path):
    """(RGB array, "") of a photograph to learn from, else (None, why not, in words)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"could not be opened ({exc.strerror or exc})"
    if too_large := rendering.too_many_pixels(data):
        # As upload refuses it at its default limit: decoded, it took the memory that limit guards
        # (training decodes two at a time). A lab that raised upload's limit (LEUKOSCOPE_MAX_IMAGE_PIXELS)
        # raised the web process's memory, not training's, so the words name training's own.
        return None, f"{too_large} training takes"
    try:
        rgb = rendering.decode_rgb(data, upright=True)
    except UnreadablePhotograph:
        return None, "not an image, or damaged"
    if min(rgb.shape[:2]) < 8:
        return None, "smaller than 8 pixels a side"
    if not quality.photograph_shows_colour(rgb):
        return None, "greyscale: the network learns and calls cells by their stain colours"
    return rgb, ""


SKIPPED_NAMED = 50  # of a run's or a split's skipped files, those a version records by name


def skipped_files(images, ok, limit=SKIPPED_NAMED):
    """[{"path", "reason"}] of the first ``limit`` ``images`` that did not prepare (``ok`` false), so
    a lab with thousands of photographs can find and mend them."""
    skipped = [image.path for image, good in zip(images, ok, strict=True) if not good]
    return [{"path": path, "reason": skipped_because(path)} for path in skipped[:limit]]


class SkippedFiles:
    """The files a run's preparation skipped, list by list: how many (``count``), and the first
    SKIPPED_NAMED of them with why (``named``), none read again once that many are named."""

    def __init__(self):
        self.count = 0
        self.named = []

    def add(self, images, ok):
        """Count and name the ``images`` whose ``ok`` is false (load_prepared's mask)."""
        self.count += int((~ok).sum())
        if room := SKIPPED_NAMED - len(self.named):
            self.named += skipped_files(images, ok, room)


def _window_scale(result, window_scale):
    return float(result.scale) if window_scale == "image" else 1.0


def _centred_window(rgb, scale, fill=None):
    """The context window around the photograph's centre (where a labelled cell usually is)."""
    height, width = rgb.shape[:2]
    centre = detection.DetectedCell(box=(0, 0, width, height), score=0.0)
    return detection.cell_window(rgb, centre, scale, fill=fill)


def reference_field(rgb, window_scale="image"):
    """A labelled photograph as a 240x320 field at reference scale, centred on its centre.

    A blood-cell-images field is one already. Any other photograph is brought to reference scale
    by the detector's red-cell ruler (window_scale "image"; "reference" takes its pixels as
    reference pixels) with its aspect ratio kept: stretching a square single-cell crop into the
    4:3 window would widen every cell in it by a third.
    """
    if rgb.shape[:2] == WINDOW_SIZE:
        return rgb
    return _centred_window(rgb, _window_scale(detection.detect_leukocytes(rgb), window_scale))


def _source_version(module_file):
    path = Path(__file__).with_name(module_file)
    if not path.is_file():
        return "none"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def detector_version():
    """Changes when classifier/detection.py changes, so cached windows are rebuilt."""
    return _source_version("detection.py")


def decoder_version():
    """Changes when how a training photograph becomes RGB, or is refused, may change (decode_image,
    the colour conversion and pixel limit in classifier/rendering.py and photograph_size.py, the
    decoding library, the colour check in classifier/quality.py), so pixels cached by another
    decoder are prepared again: a cache written before colour profiles were read held raw numbers."""
    checks = (quality.COLOURED_SPREAD, quality.COLOURED_SHARE, quality.COLOUR_CHECK_SIDE,
              MAX_PHOTOGRAPH_PIXELS)
    digest = hashlib.sha256(f"{PIL.__version__} {_source_version('rendering.py')} {checks}".encode())
    try:
        digest.update(inspect.getsource(decode_image).encode())
        digest.update(inspect.getsource(_decoded).encode())
        for check in (quality.shows_colour, quality.photograph_shows_colour, quality.colour_check_copy):
            digest.update(inspect.getsource(check).encode())
    except OSError:  # installed without its sources: the file's hash above still tells releases apart
        pass
    return digest.hexdigest()[:16]


def cell_nearest_centre(cells, shape):
    """Of detected cells, the one nearest the centre of a photograph of (height, width, ...)
    ``shape``, where a labelled dataset image's cell usually is (the site's cell 1:
    detection.centre_first); None when there are none."""
    ordered = detection.centre_first(cells, shape)
    return ordered[0] if ordered else None


def dataset_context_window(rgb, window_scale="image", result=None, factor=1.0, fill=None):
    """The context window of a labelled dataset image: centred on the detected leukocyte nearest
    the image centre (the labelled cell is usually near it), or the image centre when none is
    found. window_scale "image" uses the detector's scale estimate, "reference" uses 1.0; either
    times ``factor`` (a second look's, classifier.second_look). The photograph is detected at its
    own size and shape, never resized to the window's first; ``result`` and ``fill``
    (detection.window_fill), the detector's result for it and what a window shows past its edge,
    where the caller has them already."""
    if result is None:
        result = detection.detect_leukocytes(rgb)
    nearest = cell_nearest_centre(result.cells, rgb.shape)
    scale = _window_scale(result, window_scale) * factor
    if nearest is None:
        if rgb.shape[:2] == WINDOW_SIZE and factor == 1.0:
            return rgb, False
        return _centred_window(rgb, scale, fill), False
    return detection.cell_window(rgb, nearest, scale, fill=fill), True


def locates_cell(input_spec):
    """Whether a network with this input takes the window of the cell the detector finds."""
    return input_spec.get("mode") == "cell"


def _prepare_one(image, input_spec, margins, window_scale):
    rgb = decode_image(image.path)
    if rgb is None:
        return None, False
    if image.is_window:
        window, located = rgb, True  # preparation.as_window centres one of another size
    elif not locates_cell(input_spec):
        window, located = reference_field(rgb, window_scale), False
    else:
        window, located = dataset_context_window(rgb, window_scale)
    return [prepare_window(window, input_spec, m) for m in margins], located


def fingerprint(images, roots=()):
    """SHA-256 over the file list (name, class, size): names one exact training set.

    A file under one of ``roots`` (the run's data folders, in order) is named by that folder's
    position and its path inside it, so the same folder reached by another path (relative or
    absolute, on another machine) has the same fingerprint; any other file by its path as given.
    """
    bases = [os.path.abspath(root) for root in roots]
    named = []
    for image in images:
        path = os.path.abspath(image.path)
        name = image.path
        for position, base in enumerate(bases):
            if path.startswith(base + os.sep):
                name = f"{position}:{Path(os.path.relpath(path, base)).as_posix()}"
                break
        named.append((name, image))
    digest = hashlib.sha256()
    for name, image in sorted(named, key=lambda pair: pair[0]):
        try:
            size = os.path.getsize(image.path)
        except OSError:
            size = -1
        digest.update(f"{name}\t{image.class_name}\t{size}\n".encode())
    return digest.hexdigest()


def _files_fingerprint(images):
    """Like fingerprint, without labels (a binary and a 4-class run share cached pixels), with each
    file's size, modification time and inode: a file replaced since (a git-lfs pointer by its
    photograph, once fetched) is prepared again, where its path alone kept it unreadable until the
    cache was pruned. One stat a file: 47 ms for PBC's 9,306 TRAIN photographs (7 ms by path alone)."""
    digest = hashlib.sha256()
    for image in images:
        try:
            status = os.stat(image.path)
            stamp = f"{status.st_size}\t{status.st_mtime_ns}\t{status.st_ino}"
        except OSError:  # gone: it reads as unreadable, and so it is cached until it is back
            stamp = "-"
        digest.update(f"{image.path}\t{int(image.is_window)}\t{stamp}\n".encode())
    return digest.hexdigest()


def _cache_path(cache_dir, images, input_spec, margin, window_scale, files=None):
    """The cache file of ``images`` prepared so; ``files``: their _files_fingerprint, where the
    caller has it already."""
    key_source = json.dumps(
        {
            "files": files or _files_fingerprint(images),
            "spec": input_spec,
            "margin": margin,
            "scale": window_scale,
            # A field too is brought to reference scale by the detector's ruler (reference_field),
            # wherever a photograph is not a 240x320 window already.
            "detector": detector_version() if locates_cell(input_spec) or window_scale == "image" else "",
            "decoder": decoder_version(),
            "preparation": _source_version("preparation.py"),
            "version": CACHE_VERSION,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:24]
    return cache_dir / f"prepared-{key}.npz"


def load_prepared_margins(
    images, input_spec, margins=(1.0,), window_scale="image", cache_dir=None, workers=2, keep=True
):
    """{margin: (inputs uint8 (N, H, W, 3), ok mask, located mask)} for images.

    Decoding and detection run once for all margins; each result is cached under cache_dir keyed
    by the file list (each file's size, modification time and inode with its path), the spec, the
    margin, the decoder's and the detector's source, so a second training run on the same data
    skips both. ``keep`` false neither reads nor writes the cache:
    for a list no later run asks for again (a lab's reviewed cells, another list after every
    review), whose file would only fill the disk (75 KiB a cell each run).
    """
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    out = {}
    # Taken before any file is read, and kept for the write: a file replaced while the others were
    # prepared leaves its old stamp on what was read, which the next run's key no longer matches.
    files = _files_fingerprint(images) if keep else None
    for margin in margins if keep else ():
        path = _cache_path(cache_dir, images, input_spec, margin, window_scale, files)
        if path.is_file():
            try:
                with np.load(path) as cached:
                    out[margin] = (cached["inputs"], cached["ok"], cached["located"])
            except (OSError, ValueError, KeyError):
                pass
    missing = [m for m in margins if m not in out]
    if not missing:
        return out
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(
            pool.map(lambda i: _prepare_one(i, input_spec, missing, window_scale), images)
        )
    ok = np.array([r[0] is not None for r in results], dtype=bool)
    located = np.array([r[1] for r in results], dtype=bool)
    for k, margin in enumerate(missing):
        # Where none decoded, the shape a blank window prepares to: the network's input all the same.
        shape = next((r[0][k].shape for r in results if r[0] is not None), None) or prepare_window(
            np.zeros((*WINDOW_SIZE, 3), np.uint8), input_spec, margin).shape
        inputs = np.zeros((len(images), *shape), dtype=np.uint8)
        for row, (arrays, _) in enumerate(results):
            if arrays is not None:
                inputs[row] = arrays[k]
        out[margin] = (inputs, ok, located)
        if not keep:
            continue
        path = _cache_path(cache_dir, images, input_spec, margin, window_scale, files)
        # A name of this process's own: two trainings (or test processes) preparing the same
        # images at once must not write into one half-written file.
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, inputs=inputs, ok=ok, located=located)
            os.replace(tmp, path)
        except OSError:
            # A read-only checkout still trains, only slower the next time. A full disk stopped the
            # write part-way: the part would keep the disk full for every later run (each under a
            # name of its own), and nothing else removes it for a month (manage.py classifier_cache).
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return out


def load_prepared(images, input_spec, margin=1.0, window_scale="image", cache_dir=None, workers=2,
                  keep=True):
    """uint8 (N, H, W, 3) network inputs, a bool mask of the images that decoded, and a bool
    mask of those whose cell the detector located (see load_prepared_margins)."""
    return load_prepared_margins(images, input_spec, (margin,), window_scale, cache_dir, workers, keep)[
        margin
    ]


def load_context_windows(images, input_spec, window_scale="image", workers=2):
    """240x320 context windows as training builds them for this input_spec (the image itself for
    "field" mode, centred on the detected cell for "cell" mode); None where unreadable."""

    def one(image):
        rgb = decode_image(image.path)
        if rgb is None:
            return None
        if image.is_window:
            return as_window(rgb)
        if not locates_cell(input_spec):
            return reference_field(rgb, window_scale)
        return dataset_context_window(rgb, window_scale)[0]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, images))
