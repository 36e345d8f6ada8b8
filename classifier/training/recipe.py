"""The training recipe: every setting of a training run, its default for each architecture, its
valid values, and where a person may set it.

This is the one schema every way of starting a training reads: the site's retraining form
(webapp/forms_models.py), ``manage.py train``, ``python -m classifier.train_cli`` and
bench/group_cv.py build their options from ``SETTINGS`` (classifier/training/command_line.py for the
command lines), ``train_classifier`` resolves a ``Recipe`` before it touches the data, and a
version's stored ``hyperparameters`` are written from the resolved recipe. A new setting is one
field of ``Recipe`` here (plus the code that uses it); it then appears wherever it is offered.
A new architecture is one entry of ``ARCHITECTURE_DEFAULTS`` and a builder in
``classifier.architectures``.

Plain Python, no TensorFlow: the web process imports it to build its form.
"""

import enum
import json
import math
import types
import typing
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

from classifier.architectures import DEFAULT_INPUT_SPEC, frozen_trunk_refusal, mixstyle_refusal
from classifier.errors import TrainingDataError
from classifier.labels import TASK_CLASSES
from classifier.training.data import same_folders


class Offered(enum.Enum):
    """Where a person may set a setting."""

    EVERYWHERE = "the retraining form, manage.py train and classifier.train_cli"
    COMMAND_LINE = "manage.py train and classifier.train_cli, not the retraining form"
    NOWHERE = "set by the code that sets a setting it goes with"


class PerArchitecture:
    """A setting every architecture names its own default for (in ARCHITECTURE_DEFAULTS)."""

    def __repr__(self):
        return "PER_ARCHITECTURE"


PER_ARCHITECTURE = PerArchitecture()


@dataclass(frozen=True)
class Derived:
    """A default computed from the settings resolved before it (in field order)."""

    describe: str
    compute: Callable[[dict], Any]


@dataclass(frozen=True)
class Setting:
    """What the recipe knows of one setting; name and kind come from its Recipe field."""

    help: str
    offered: Offered
    # A value, PER_ARCHITECTURE or Derived; ARCHITECTURE_DEFAULTS may override any of them.
    default: Any = None
    default_note: str = ""  # the default in words where the value alone does not say it
    flag: str = ""  # the command-line option; "" is --name-with-dashes
    choices: tuple = ()
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None
    # False: a version records it in a field of its own (architecture, task, input_spec, seed,
    # temperature, the refit's temperature_source) rather than among its hyperparameters.
    in_hyperparameters: bool = True
    # A refit repeats it from the held-out run whose temperature it borrows: that temperature was
    # fitted on the inputs and augmentation of that run, and fits no others.
    refit_repeats: bool = False
    # What a run that stored no value for it trained with (it came later): a refit of such a run
    # repeats that, not today's default. None: today's default.
    absent_means: Any = None
    name: str = ""  # filled in from the Recipe field
    kind: type = object  # the field's type, None aside

    @property
    def option(self):
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def label(self):
        return self.name.replace("_", " ")

    def default_text(self):
        """The default in words, as the command lines' help shows it."""
        per_architecture = {
            name: defaults[self.name]
            for name, defaults in ARCHITECTURE_DEFAULTS.items()
            if self.name in defaults
        }
        if self.default_note:
            return self.default_note
        if any(isinstance(value, dict) for value in per_architecture.values()):
            return "the architecture's"
        if per_architecture:
            return ", ".join(f"{name} {value}" for name, value in per_architecture.items())
        if isinstance(self.default, Derived):
            return self.default.describe
        return "none" if self.default is None else str(self.default)

    def bounds(self):
        """[(the bound in words, whether a value keeps it)] of a number."""
        bounds = []
        if self.at_least is not None:
            bounds.append((f"at least {self.at_least:g}", lambda value: value >= self.at_least))
        if self.above is not None:
            bounds.append((f"above {self.above:g}", lambda value: value > self.above))
        if self.below is not None:
            bounds.append((f"below {self.below:g}", lambda value: value < self.below))
        if self.at_most is not None:
            bounds.append((f"at most {self.at_most:g}", lambda value: value <= self.at_most))
        return bounds


def setting(**options):
    """A Recipe field: None until resolved, then the given value or the default."""
    return field(default=None, metadata={"setting": Setting(**options)})


# What each architecture trains with unless a run says otherwise: the recipes of the bundled
# networks (classifier/default_model/MODEL_CARD.md), so that a retraining from the site or
# `manage.py train` with no options repeats the recipe of the shipped model.
ARCHITECTURE_DEFAULTS = {
    # The published network and its published training: plain Adam, no augmentation.
    "paper": {
        "input_spec": DEFAULT_INPUT_SPEC["paper"],
        "epochs": 20,
        "optimizer": "adam",
        "learning_rate": 3e-4,
        "label_smoothing": 0.0,
        "augment": False,
        "mixup": 0.0,
        "keep_last_epoch": False,
        "sampling": "shuffle",
    },
    "leukonet": {
        "input_spec": DEFAULT_INPUT_SPEC["leukonet"],
        "epochs": 16,
        "optimizer": "adamw+cosine",
        "learning_rate": 3e-3,
        "label_smoothing": 0.1,
        "augment": True,
        "mixup": 0.3,
        # LeukoNet is served as a refit, which keeps its last epoch (nothing is left to choose one
        # on): its held-out run keeps the last epoch too, so the temperature the refit borrows was
        # fitted on the network it will be, not on an earlier epoch's.
        "keep_last_epoch": True,
        "sampling": "balanced",
    },
}
# LeukoNet with group norm: the same recipe; only the normalisation differs, for the comparison of
# the two under a change of lab (classifier.architectures), the length (the bundled eight-type
# network trained on two labs was still improving at 16 epochs and ships at 30), and windows shown
# without their stain normalised or through a camera that clips, which the bundled network trains
# with (its MODEL_CARD).
ARCHITECTURE_DEFAULTS["leukonet-gn"] = {
    **ARCHITECTURE_DEFAULTS["leukonet"], "input_spec": DEFAULT_INPUT_SPEC["leukonet-gn"], "epochs": 30,
    "unnormalised_stain": 0.3,
    # Saturation from near grey to nearly twice as vivid: one lab's cells are pale and lilac,
    # another's saturated purple, and a network trained on one read the other's neutrophils as
    # monocytes (trained on PBC alone: BCCD TEST 71.1% against 51.6-62.8%; MODEL_CARD).
    "saturation": 0.9,
    # A camera that clips the background (PBC's analyser does, in red): the shipped network trained
    # with it reads PBC's validation cells through a warmer camera at 92.7% instead of 77.1%, and
    # at 1.25x the exposure at 84.6% instead of 59.4% (bench/shifts.py --split validation).
    "clipped_exposure": 0.3,
}
# An ImageNet-initialised trunk fine-tuned end to end: a tenth of LeukoNet's peak learning rate
# keeps the first epochs from wiping out what ImageNet taught it, and it needs fewer epochs.
ARCHITECTURE_DEFAULTS["effnet-lite0"] = {
    **ARCHITECTURE_DEFAULTS["leukonet"],
    "input_spec": DEFAULT_INPUT_SPEC["effnet-lite0"],
    "epochs": 8,
    "learning_rate": 1e-3,
}
ARCHITECTURES = tuple(ARCHITECTURE_DEFAULTS)
TASKS = tuple(TASK_CLASSES)
OPTIMIZERS = ("adam", "adamw+cosine")
SAMPLINGS = ("shuffle", "balanced")
EVERYWHERE, COMMAND_LINE, NOWHERE = Offered.EVERYWHERE, Offered.COMMAND_LINE, Offered.NOWHERE


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Every setting of a training run. None stands for "not given": ``resolved()`` fills in the
    architecture's default, checks every value and returns the recipe a run trains with."""

    architecture: str | None = setting(
        help="the network to train", offered=EVERYWHERE, default="leukonet", flag="--arch",
        choices=ARCHITECTURES, in_hyperparameters=False,
    )
    task: str | None = setting(
        help="the classes it tells apart", offered=EVERYWHERE, default="4class", choices=TASKS,
        in_hyperparameters=False,
    )
    epochs: int | None = setting(
        help="passes over the training images", offered=EVERYWHERE, default=PER_ARCHITECTURE,
        at_least=1,
    )
    batch_size: int | None = setting(
        help="images per training step", offered=COMMAND_LINE, default=64, at_least=1,
        refit_repeats=True,
    )
    optimizer: str | None = setting(
        help="adam: a constant learning rate, as published; adamw+cosine: decoupled weight decay, "
        "a warm-up and a cosine decay of the learning rate",
        offered=COMMAND_LINE, default=PER_ARCHITECTURE, choices=OPTIMIZERS, refit_repeats=True,
    )
    learning_rate: float | None = setting(
        help="(peak) learning rate", offered=COMMAND_LINE, default=PER_ARCHITECTURE, flag="--lr",
        above=0, refit_repeats=True,
    )
    weight_decay: float | None = setting(
        help="decoupled weight decay of adamw+cosine", offered=COMMAND_LINE,
        default=Derived("0 with adam, which has none; else 0.005",
                        lambda resolved: 0.0 if resolved["optimizer"] == "adam" else 0.005),
        at_least=0, refit_repeats=True,
    )
    label_smoothing: float | None = setting(
        help="label smoothing of the cross-entropy loss", offered=COMMAND_LINE,
        default=PER_ARCHITECTURE, at_least=0, below=1, refit_repeats=True,
    )
    augment: bool | None = setting(
        help="rotate, zoom, shift, flip, blur and stain-jitter the training images",
        offered=COMMAND_LINE, default=PER_ARCHITECTURE, refit_repeats=True,
    )
    mixup: float | None = setting(
        help="mixup of training batches, blend weight ~ Beta(a, a); 0 is off", offered=COMMAND_LINE,
        default=PER_ARCHITECTURE, at_least=0, refit_repeats=True,
    )
    keep_last_epoch: bool | None = setting(
        help="keep the last epoch's network, not the best on validation (a refit always keeps "
        "the last)", offered=COMMAND_LINE, default=PER_ARCHITECTURE,
    )
    validation_fraction: float | None = setting(
        help="share of TRAIN groups (original photographs) held out per class to choose the epoch "
        "and fit the calibration temperature on; 0 trains on every group (a refit: the last epoch "
        "is kept, and the temperature of a held-out run of the same recipe is required)",
        offered=COMMAND_LINE, default=0.15, at_least=0, below=1,
    )
    validation_seed: int | None = setting(
        help="seed of the group validation split; fix it to compare runs on one split",
        offered=COMMAND_LINE, default_note="the seed",
    )
    window_scale: str | None = setting(
        help="the scale a training image's context window is cut at: the detector's estimate "
        "from the image's red cells, or the reference scale", offered=COMMAND_LINE,
        default="image", choices=("image", "reference"), refit_repeats=True,
    )
    max_images_per_class: int | None = setting(
        help="train on a random subset of each class (quick trials)", offered=COMMAND_LINE,
        at_least=1,
    )
    input_spec: dict | None = setting(
        help='what the network sees, as JSON, e.g. {"height": 96, "width": 96, "mode": "cell", '
        '"crop": 128} (classifier.preparation)', offered=COMMAND_LINE, default=PER_ARCHITECTURE,
        in_hyperparameters=False, refit_repeats=True,
    )
    # Per-channel gain jitter (+-): white-balanced inputs need little, and a large one blurs the
    # cytoplasm tint that separates eosinophils from neutrophils.
    colour_jitter: float | None = setting(
        help="+- per-channel gain of the stain augmentation", offered=COMMAND_LINE,
        default=Derived("0.04 for white-balanced inputs, else 0.1",
                        lambda resolved: 0.04 if resolved["input_spec"].get("white_balance") else 0.1),
        at_least=0, below=1, refit_repeats=True,
    )
    # Tellez et al. 2019 ("HED-light" 0.05, "HED-strong" 0.2 on histopathology): these inputs are
    # white-balanced and stain-normalised already, so a moderate jitter covers what is left of a
    # lab's stain.
    stain_scale: float | None = setting(
        help="stain augmentation: each of the haematoxylin, eosin and residual optical densities "
        "(Ruifrok-Johnston) times U(1 - s, 1 + s); 0 is off", offered=COMMAND_LINE, default=0.1,
        at_least=0, below=1, refit_repeats=True, absent_means=0.0,
    )
    stain_shift: float | None = setting(
        help="stain augmentation: each stain density plus U(-b, b); 0 is off", offered=COMMAND_LINE,
        default=0.02, at_least=0, refit_repeats=True, absent_means=0.0,
    )
    # A lab's tight crop of one cell holds no red cells to normalise its stain on: served so, a
    # network trained without this read PBC's cells cropped to 1.2x their box at 65% (93% with the
    # stain read from the whole photograph); trained with 0.3, at 74%, and a warmer camera's at
    # 70% instead of 50% (bench/shifts.py; the model card). LeukoNet-GN's recipe sets it.
    unnormalised_stain: float | None = setting(
        help="share of training images shown without their stain normalised, each channel's "
        "optical density scaled by up to exp(+-0.5), as a window without red cells is served; "
        "0 is off", offered=COMMAND_LINE, default=0.0, at_least=0, at_most=1, refit_repeats=True,
        absent_means=0.0,
    )
    # PBC's red background is clipped in nearly every photograph, so a warmer camera or a longer
    # exposure changes what its cells look like after the white balance: PBC TEST read 77% through
    # a warmer camera and 60% exposed 1.25x, against 95% as photographed (bench/shifts.py).
    clipped_exposure: float | None = setting(
        help="share of training images shown as a camera that clips the background would show "
        "them: a channel up to 0.15 lighter in optical density than the white balance can undo; 0 is "
        "off",
        offered=COMMAND_LINE, default=0.0, at_least=0, at_most=1, refit_repeats=True,
        absent_means=0.0,
    )
    brightness: float | None = setting(
        help="+- brightness added to the [0, 1] image", offered=COMMAND_LINE, default=0.08,
        at_least=0, below=1, refit_repeats=True,
    )
    contrast: float | None = setting(
        help="contrast times U(1 - c, 1 + c)", offered=COMMAND_LINE, default=0.2, at_least=0,
        below=1, refit_repeats=True,
    )
    saturation: float | None = setting(
        help="saturation times U(1 - s, 1 + s)", offered=COMMAND_LINE, default=0.25, at_least=0,
        below=1, refit_repeats=True,
    )
    # Hue carries the stain's message (an eosinophil's orange granules against a neutrophil's
    # lilac ones): a small turn of the colour wheel, no more.
    hue: float | None = setting(
        help="+- hue turn, as a share of the colour wheel", offered=COMMAND_LINE, default=0.02,
        at_least=0, below=0.5, refit_repeats=True, absent_means=0.0,
    )
    blur: float | None = setting(
        help="share of training images blurred (by up to about a Gaussian of 1.3 px), as a slide "
        "out of focus", offered=COMMAND_LINE, default=0.2, at_least=0, at_most=1, refit_repeats=True,
        # Before: a 3x3 binomial blur of 15% of the images, the nearest this setting comes to it.
        absent_means=0.15,
    )
    # Measured at the network's 128x128 view (median over 300 TRAIN cells, the Laplacian's
    # spread): BCCD's camera 0.022, PBC's analyser 0.085; PBC shrunk to 1/3 and back 0.024, to
    # 1/4 0.017. Another lab's optics may be blurrier still than either.
    blur_shrink: float | None = setting(
        help="the strongest blur: the detail lost by a shrink to 1/f and back", offered=COMMAND_LINE,
        default=3.0, at_least=1, refit_repeats=True, absent_means=3.0,
    )
    # Nuclei against the red cells the stain is normalised on: BCCD's darkest 2% of a cell's pixels
    # read 0.61 (grey, median over 300 TRAIN cells), PBC's 0.35, an optical density half as large;
    # how much azure a nucleus takes up is the lab's protocol, not the cell's type.
    haematoxylin_spread: float | None = setting(
        help="each image's haematoxylin (blue) optical density times exp(U(-s, s)); 0 is off",
        offered=COMMAND_LINE, default=0.0, at_least=0, refit_repeats=True, absent_means=0.0,
    )
    noise: float | None = setting(
        help="largest standard deviation of the Gaussian noise added to the [0, 1] image",
        offered=COMMAND_LINE, default=0.02, at_least=0, below=1, refit_repeats=True,
        absent_means=0.0,
    )
    jpeg: float | None = setting(
        help="share of training images re-encoded as JPEG at quality 40-95, as another lab's "
        "camera or export may have", offered=COMMAND_LINE, default=0.3, at_least=0, at_most=1,
        refit_repeats=True, absent_means=0.0,
    )
    sampling: str | None = setting(
        help="shuffle: every training image once an epoch; balanced: each batch draws the data "
        "folders equally (or by source weights) and, within each, its classes equally",
        offered=COMMAND_LINE, default=PER_ARCHITECTURE, choices=SAMPLINGS, refit_repeats=True,
        absent_means="shuffle",
    )
    source_weights: dict | None = setting(
        help='balanced sampling: weight of each data folder, by folder name, e.g. {"pbc": 2}; '
        "those not named weigh 1", offered=COMMAND_LINE,
        default=Derived("every folder 1", lambda resolved: {}),
        refit_repeats=True,
    )
    # Scale factor exp(U(-zoom, zoom)): 0.80-1.25x covers the spread of the detector's red-cell
    # scale estimate (0.89-1.22x, 5th-95th percentile on BCCD) that every served window carries,
    # and small and large cells of one type.
    zoom: float | None = setting(
        help="zoom augmentation: scale factor exp(U(-zoom, zoom))", offered=COMMAND_LINE,
        default=0.22, at_least=0, refit_repeats=True,
    )
    width: float | None = setting(
        help="LeukoNet's filter counts times this", offered=COMMAND_LINE, default=1.0, above=0,
        refit_repeats=True,
    )
    # On a CPU the whole trunk trains at ~10 images/s; frozen, a run costs its forward passes
    # alone, and the ImageNet features are all a network trained on one lab carries to the next.
    freeze_trunk: bool | None = setting(
        help="an ImageNet-initialised network (effnet-lite0): keep its trunk's weights and train "
        "the head alone", offered=COMMAND_LINE, default=False, refit_repeats=True,
        absent_means=False,
    )
    # Zhou et al. 2021 place it after a ResNet's first stages at 0.5 (photographs to paintings and
    # sketches). Colour augmentation changes an image's pixels; a lab's stain and camera also shift
    # what the early filters respond to, and those statistics are what this varies.
    mixstyle: float | None = setting(
        help="share of training batches whose early LeukoNet feature maps take on a blend of another "
        "image's channel statistics (MixStyle); 0 is off", offered=COMMAND_LINE, default=0.0,
        at_least=0, at_most=1, refit_repeats=True, absent_means=0.0,
    )
    seed: int | None = setting(
        help="seed of the weights, the shuffling and the augmentation (and of the validation "
        "split unless it has its own)", offered=COMMAND_LINE, default=20261125,
        in_hyperparameters=False,
    )
    temperature: float | None = setting(
        help="calibration temperature of a refit (validation fraction 0), as fitted by a held-out "
        "run of the same recipe", offered=COMMAND_LINE, above=0, in_hyperparameters=False,
    )
    temperature_source: str | None = setting(
        help="where that temperature was fitted, for the record", offered=NOWHERE, default="",
        in_hyperparameters=False,
    )
    review_threshold: float | None = setting(
        help="the review flag's confidence threshold of a refit: the one its held-out run fitted at "
        "the temperature the refit borrows (None: the site's default)", offered=NOWHERE, above=0,
        below=1, in_hyperparameters=False,
    )

    @property
    def refit(self):
        """Trains on every TRAIN group, with a temperature borrowed from a held-out run."""
        return self.validation_fraction == 0.0

    @property
    def class_names(self):
        return list(TASK_CLASSES[self.task])

    @property
    def split_seed(self):
        return self.seed if self.validation_seed is None else self.validation_seed

    def resolved(self) -> "Recipe":
        """The recipe with every default filled in and every value checked; raises RecipeError."""
        values = {}
        for setting_ in SETTINGS:
            given = getattr(self, setting_.name)
            value = _default(setting_, values) if given is None else given
            values[setting_.name] = _checked(setting_, _typed(setting_, value))
        _check_combinations(values)
        return Recipe(**values)

    def hyperparameters(self):
        """The settings a version records among its hyperparameters (of a resolved recipe)."""
        return {s.name: getattr(self, s.name) for s in SETTINGS if s.in_hyperparameters}


def _value_type(annotation):
    """int for ``int | None``."""
    if isinstance(annotation, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


SETTINGS = tuple(
    replace(f.metadata["setting"], name=f.name, kind=_value_type(f.type)) for f in fields(Recipe)
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


class RecipeError(TrainingDataError):
    """A setting a run cannot train with; ``settings`` names the settings at fault."""

    def __init__(self, message, *settings):
        super().__init__(message)
        self.settings = settings


KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false",
              dict: "a JSON object", str: "text"}


def _default(setting_, resolved):
    if setting_.name == "architecture":
        return setting_.default
    defaults = ARCHITECTURE_DEFAULTS[resolved["architecture"]]
    if setting_.name in defaults:
        value = defaults[setting_.name]
        return dict(value) if isinstance(value, dict) else value
    if isinstance(setting_.default, Derived):
        return setting_.default.compute(resolved)
    return setting_.default


def _typed(setting_, value):
    if value is None or isinstance(value, setting_.kind):
        return dict(value) if isinstance(value, dict) else value
    # Anything converts to a bool ("false" to True): a yes-or-no setting takes only True or False.
    if setting_.kind is not bool:
        with suppress(TypeError, ValueError):
            return setting_.kind(value)
    raise RecipeError(f"{setting_.label} {value!r} is not {KIND_WORDS[setting_.kind]}", setting_.name)


def _checked(setting_, value):
    if value is None:
        return value
    if setting_.choices and value not in setting_.choices:
        raise RecipeError(
            f"unknown {setting_.label} {value!r}; expected one of {', '.join(setting_.choices)}",
            setting_.name,
        )
    if isinstance(value, float) and not math.isfinite(value):
        # Infinity passes a lower bound, then trains on nothing sensible and cannot be stored as JSON.
        raise RecipeError(f"{setting_.label} {value} must be a finite number", setting_.name)
    bounds = setting_.bounds()
    if not all(holds(value) for _, holds in bounds):
        wanted = " and ".join(text for text, _ in bounds)
        raise RecipeError(f"{setting_.label} {value} must be {wanted}", setting_.name)
    return value


INPUT_MODES = ("field", "cell")  # classifier.preparation: the whole window, or a crop round the cell


def _check_input_spec(spec):
    """Refuse an input spec classifier.preparation cannot prepare a network's input by: a slip in
    --input-spec otherwise stopped the run on a KeyError once it prepared its images."""
    shown = json.dumps(spec, sort_keys=True)
    not_finite = sorted(key for key, value in spec.items()
                        if isinstance(value, float) and not math.isfinite(value))
    if not_finite:
        raise RecipeError(f"input spec {shown}: {', '.join(not_finite)} must be a finite number",
                          "input_spec")
    mode = spec.get("mode", "field")  # older records name no mode: the whole window
    if mode not in INPUT_MODES:
        raise RecipeError(f"input spec {shown}: mode {mode!r} is not one of {', '.join(INPUT_MODES)}",
                          "input_spec")
    for key in ("height", "width", *(("crop",) if mode == "cell" else ())):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f'input spec {shown} needs "{key}": a whole number above 0', "input_spec")
    if mode == "cell" and spec["height"] != spec["width"]:
        raise RecipeError(f"input spec {shown}: a cell's view is square, so its height and width must be "
                          "equal", "input_spec")


def _check_combinations(values):
    _check_input_spec(values["input_spec"])
    if values["validation_fraction"] == 0.0 and values["temperature"] is None:
        raise RecipeError(
            "training on every group leaves no held-out split to fit the calibration "
            "temperature on: give the temperature of a held-out run of the same recipe",
            "validation_fraction", "temperature",
        )
    if values["review_threshold"] is not None and values["validation_fraction"] != 0.0:
        raise RecipeError(
            "a run with a validation split fits its own review threshold: only a refit borrows one",
            "review_threshold", "validation_fraction",
        )
    _check_source_weights(values)
    refusal = frozen_trunk_refusal(values["architecture"])
    if values["freeze_trunk"] and refusal:
        raise RecipeError(refusal, "freeze_trunk", "architecture")
    if values["mixstyle"] and (refusal := mixstyle_refusal(values["architecture"])):
        raise RecipeError(refusal, "mixstyle", "architecture")
    if values["optimizer"] == "adam" and values["weight_decay"] != 0.0:
        raise RecipeError(
            f"weight decay {values['weight_decay']} needs the adamw+cosine optimizer: adam, "
            "the published network's, has none", "weight_decay", "optimizer",
        )


def _check_source_weights(values):
    weights = values["source_weights"] or {}
    bad = [f"{name}: {weight!r}" for name, weight in weights.items()
           if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf]
    if bad or (weights and not any(weights.values())):
        raise RecipeError(
            "source weights must be finite numbers of at least 0, not all 0: " + (", ".join(bad) or "all 0"),
            "source_weights",
        )


def check_architecture(name):
    """Raise RecipeError unless ``name`` is an architecture a recipe can train."""
    _checked(SETTINGS_BY_NAME["architecture"], name)


def check_task(name):
    """Raise RecipeError unless ``name`` is a task a recipe can train."""
    _checked(SETTINGS_BY_NAME["task"], name)


def refit_settings(hyperparameters, input_spec):
    """The settings a refit repeats, from the hyperparameters and input spec a held-out run stored.

    Older runs stored fewer settings: what they lack takes what such a run trained with where the
    setting says (absent_means: no stain augmentation before it existed), else today's default.
    """
    stored = {**(hyperparameters or {}), "input_spec": dict(input_spec) if input_spec else None}
    repeated = {}
    for s in SETTINGS:
        if not s.refit_repeats:
            continue
        if stored.get(s.name) is not None:
            repeated[s.name] = stored[s.name]
        elif hyperparameters and s.absent_means is not None:
            repeated[s.name] = s.absent_means
    return repeated


def differences_from_run(recipe, metadata):
    """{setting: (the stored run's value, the recipe's)} of each setting a stored run was trained
    with otherwise than ``recipe`` (resolved) trains: its network, classes, input, seed and
    recorded hyperparameters. A setting the run did not record counts as what runs before it
    trained with (absent_means), else as unknown (None): a run is not taken for today's recipe on
    trust."""
    identity = ("architecture", "task", "input_spec", "seed")
    stored = {**(metadata.get("hyperparameters") or {}), **{name: metadata.get(name) for name in identity}}
    wanted = {**recipe.hyperparameters(), **{name: getattr(recipe, name) for name in identity}}
    differing = {}
    for name, value in wanted.items():
        was = stored[name] if stored.get(name) is not None else SETTINGS_BY_NAME[name].absent_means
        if was != value:
            differing[name] = (was, value)
    return differing


def trained_as(architecture, task, hyperparameters):
    """{setting: value} of what a refit must train as its held-out run did (the run's network, its
    classes and its length), of those the run recorded."""
    recorded = {
        "architecture": architecture,
        "task": task,
        "epochs": (hyperparameters or {}).get("epochs"),
    }
    return {key: value for key, value in recorded.items() if value is not None}


class RefitMismatch(ValueError):
    """A refit told to train other than its held-out run did; ``differing`` holds, for each
    setting concerned, (what the refit was given, what the run trained)."""

    def __init__(self, differing):
        self.differing = differing
        listed = ", ".join(f"{key} {given} (the run: {run})" for key, (given, run) in differing.items())
        super().__init__(
            "a refit trains the network its held-out run trained, for as many epochs, or the "
            f"run's temperature does not fit it: {listed}"
        )


class RefitDataMismatch(ValueError):
    """A refit given other data folders than its held-out run learnt from."""

    def __init__(self, given, run):
        self.given, self.run = given, run
        super().__init__(
            f"a refit learns from the data folders its held-out run did ({', '.join(map(str, run))}), "
            f"or the run's temperature and review threshold do not fit it: given {', '.join(map(str, given))}"
        )


class HeldOutCalibration(NamedTuple):
    """What a refit borrows from a held-out run of its recipe."""

    temperature: float
    source: str  # where the temperature was fitted, for the record
    repeated: dict  # the run's settings the refit repeats (refit_settings)
    # The review threshold the run fitted at that temperature; None where it fitted none, or where
    # the temperature was pooled over runs, at which no run fitted one.
    review_threshold: float | None = None
    # The run's network, classes and length (trained_as): its temperature and threshold were
    # fitted on that network after that many epochs, and are not another network's to borrow.
    trained_as: dict | None = None
    # The data folders the run learnt from, as it recorded them (None where it recorded none): its
    # temperature and threshold were fitted on its validation split of those.
    data_folders: tuple | None = None

    def settings(self):
        """The refit's calibration settings: temperature, its source and the review threshold."""
        borrowed = {"temperature": self.temperature, "temperature_source": self.source}
        if self.review_threshold is not None:
            borrowed["review_threshold"] = self.review_threshold
        return borrowed

    def check_same_data(self, folders):
        """Raise RefitDataMismatch unless ``folders`` are the data folders the run learnt from, in
        any order: a refit is its recipe on every group of the same data, and on other data the
        run's temperature and review threshold were fitted on cells the refit never saw."""
        if self.data_folders and not same_folders(folders, self.data_folders):
            raise RefitDataMismatch(list(folders), list(self.data_folders))

    def for_refit(self, given):
        """(settings, those repeated) of a refit that borrows this calibration and repeats the
        run's recipe: settings given win over the run's, but for its network, classes and length,
        which a refit must share with it. Raises RefitMismatch, naming the settings that differ."""
        run = self.trained_as or {}
        differing = {
            key: (given[key], value) for key, value in run.items() if key in given and given[key] != value
        }
        if differing:
            raise RefitMismatch(differing)
        repeated = {key: value for key, value in {**run, **self.repeated}.items() if key not in given}
        return {**repeated, **given, **self.settings()}, repeated
