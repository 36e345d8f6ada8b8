"""Training model versions: starting one from the site, running it in the `train` worker,
cancelling it, and re-classifying samples with the active version.

The web process imports this module, and with it the training recipe (classifier.training), which
imports TensorFlow only when a run starts: inside `run_training`, in a worker or a management
command.
"""

import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from classifier import ood
from classifier.dataset import left_out_note, task_class
from classifier.errors import TrainingCancelled, TrainingDataError, UnreadableFolder
from classifier.training.adaptation import check_enough, lab_cells
from classifier.training.data import (
    check_class_counts_together,
    check_data_folder,
    check_each_folder_once,
    data_folders,
    found_folders,
)
from classifier.training.recipe import (
    SETTINGS,
    HeldOutCalibration,
    Recipe,
    RecipeError,
    RefitDataMismatch,
    RefitMismatch,
    trained_as,
)
from classifier.training.recipe import refit_settings as stored_refit_settings
from classifier.training.run import TrainingConfig
from webapp import audit
from webapp.db_errors import first_line, is_database_full
from webapp.models import TRAINED_STATUSES, Cell, ModelVersion, Sample, SmearImage
from webapp.queueing import queue_classifications, queue_training, stop_task
from webapp.selectors import (
    abandoned_trainings,
    adaptation_epochs,
    adaptation_plan,
    held_out_run_name,
    reviewed_cell_windows,
)
from webapp.services.liveness import TrainingClaim, claim_training, heartbeat
from webapp.services.locking import ensure_editable
from webapp.services.model_registry import NoActiveModel, classifier_metadata
from webapp.services.model_versions import store_training_result
from webapp.services.storage import DISK_REFUSALS
from webapp.wording import count_of

logger = logging.getLogger(__name__)

class TrainingRefused(ValueError):
    """A user-facing reason why a training cannot be started or cancelled; ``setting``, where one
    argument of start_training is at fault (a refit's epochs, say), names it, so that a form can say
    the reason beside what was typed there."""

    def __init__(self, message, setting=None):
        super().__init__(message)
        self.setting = setting


def _as_sentence(reason):
    """A classifier's reason ("training data folder ... holds no images") as a sentence's start."""
    return f"{reason[:1].upper()}{reason[1:]}"


# The recipe settings (classifier.training.recipe) a version in status training keeps among its
# requested hyperparameters, for run_training to hand to TrainingConfig; the others have fields of
# their own (architecture, task, seed).
VERSION_FIELDS = ("architecture", "task", "seed")
RECIPE_SETTINGS = tuple(s.name for s in SETTINGS if s.name not in VERSION_FIELDS)


def held_out_runs():
    """Finished versions trained with a validation split: those a refit can take a temperature from.

    A refit's own temperature is borrowed, so refits are not offered as a source in turn.
    """
    return (
        ModelVersion.objects.defer("model_bytes")
        .filter(status__in=TRAINED_STATUSES)
        .filter(metrics__has_key="best_epoch")
    )


def held_out_calibration(version):
    """What a refit of a held-out run borrows from it (recipe.HeldOutCalibration): its temperature,
    the settings to repeat, and the review threshold it fitted at that temperature."""
    if not version.is_trained:
        raise TrainingRefused(
            f"v{version.pk} is {version.get_status_display().lower()}: it has no fitted temperature.",
            setting="refit_from")
    best_epoch = (version.metrics or {}).get("best_epoch")
    if best_epoch is None:
        raise TrainingRefused(
            f"v{version.pk} was trained on every group, without a validation split: its temperature "
            "was itself borrowed. Refit from the held-out run it came from.", setting="refit_from"
        )
    return HeldOutCalibration(
        version.temperature,
        held_out_run_name(version),
        refit_settings(version),
        ood.fitted_confidence_threshold(version.metrics),
        trained_as(version.architecture, version.task, version.hyperparameters),
        tuple(data_folders(version.dataset_path)) or None,
    )


def retrainable_active_version():
    """The active version, whose architecture and task a retraining trains unless told otherwise
    (a lab retrains the network it serves); None with none active, or where the recipe no longer
    trains its architecture."""
    active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).only("task", "architecture")
    active = active.first()
    if active is None:
        return None
    try:
        Recipe(architecture=active.architecture, task=active.task).resolved()
    except RecipeError:
        return None
    return active


def default_data_folders():
    """The configured data folders (settings.TRAINING_DATA_DIRS), as a run's data_dir lists them."""
    return [str(folder) for folder in settings.TRAINING_DATA_DIRS]


def outside_training_roots(folders):
    """Those of ``folders`` (absolute paths, as typed on the retraining form) that do not lie under
    one of settings.TRAINING_DATA_ROOTS, links and ".." resolved first so that neither leads out."""
    roots = [os.path.realpath(root) for root in settings.TRAINING_DATA_ROOTS]
    outside = []
    for folder in folders:
        real = os.path.realpath(os.path.expanduser(folder))
        if not any(os.path.commonpath([real, root]) == root for root in roots):
            outside.append(folder)
    return outside


# What a data folder must hold, in the words the retraining form refuses one with.
DATA_FOLDER_EXPECTED = (
    "a folder with TRAIN/ (and, for held-out figures, TEST/), each holding one folder per cell type "
    "(e.g. NEUTROPHIL/) with its images, or the folders per cell type alone"
)


class TrainingStopped(KeyboardInterrupt):
    """A signal to end the process (SIGTERM from `kill` or a service manager, SIGHUP from a closed
    terminal) met while training at a terminal: raised where Python's default would end the process
    at once and leave its version "training" until the reconciler found the process gone, so that
    the version is marked cancelled, as for Ctrl-C, and the terminal told."""

    def __init__(self, signal_name):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.reason = f"Stopped by {signal_name}: the process was asked to end."


class UnusableDataFolder(TrainingRefused):
    """A data folder a run could not learn from; ``reason`` is the run's own (classifier.training
    .data.check_data_folder), which names no folder inside it but a split none of whose images is a
    photograph: ``unreadable``, that split's folder (else None)."""

    def __init__(self, folder, reason, unreadable=None):
        super().__init__(_as_sentence(reason))
        self.folder = folder
        self.reason = reason
        self.unreadable = unreadable


class TooFewImages(TrainingRefused):
    """The data folders together hold too few images of one of the task's classes."""


def check_data(folders, task):
    """Each data folder checked as its run will check it, before a version is stored, so that a
    folder no run can learn from is refused at once rather than left listed as a failed version.
    Raises UnusableDataFolder for the first that cannot work (a split of git-lfs pointers in place
    of its photographs among them: a failed version seconds later), then TooFewImages where
    together they lack one of the task's classes (an eight-type task on a four-type folder failed as
    a version).

    Returns a note for each folder with class folders the task does not learn (a four-type task on
    PBC's eight): a run passes them by, and whoever started it should know which cells it never saw."""
    try:
        check_each_folder_once(folders)
    except TrainingDataError as exc:
        raise TrainingRefused(_as_sentence(str(exc))) from None
    checked = []
    for folder in folders:
        try:
            checked.append(check_data_folder(folder, task))
        except UnreadableFolder as exc:
            raise UnusableDataFolder(folder, str(exc), unreadable=exc.folder) from None
        except TrainingDataError as exc:
            raise UnusableDataFolder(folder, str(exc)) from None
    if not checked:
        return []
    try:
        check_class_counts_together(checked, task, TrainingConfig.min_images_per_class)
    except TrainingDataError as exc:
        raise TooFewImages(_as_sentence(str(exc))) from None
    return [note for layout, _ in checked if (note := left_out_note(layout.train_dir, task))]



def training_in_progress():
    return ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).first()


def _lock_training_slot():
    """Serialise concurrent starts so at most one version is ever in status training.

    PostgreSQL: both requests lock the same row (the oldest version) with SELECT ... FOR UPDATE,
    so the second waits until the first commits and then sees its new training row. SQLite
    ignores FOR UPDATE, but the settings open every transaction as BEGIN IMMEDIATE, which takes
    the database's write lock up front and serialises the same way.
    """
    first = ModelVersion.objects.select_for_update().order_by("pk").values_list("pk", flat=True)[:1]
    list(first)
    if connection.vendor == "postgresql":
        # An empty table has no row to lock: an advisory lock for this transaction covers that.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x1E0C0])


def _claim_training_slot(refuse_if_training=True):
    """Inside a transaction: hold the training slot, or refuse while a version trains."""
    _lock_training_slot()
    if refuse_if_training:
        running = training_in_progress()
        if running is not None:
            raise TrainingRefused(
                f"Version v{running.pk} is already training; wait for it to finish or cancel it "
                "before starting another."
            )


def create_training_version(
    *,
    data_dir,
    source,
    user=None,
    include_reviewed=False,
    refuse_if_training=True,
    **given,
):
    """A ModelVersion in status training holding the requested settings (not yet enqueued).

    ``given`` are training-recipe settings by name (classifier.training.recipe.Recipe): architecture,
    task and epochs from the site, any of them from the command; those left out or None take the
    recipe's defaults. They are checked here, so that no version is queued with settings its run
    would refuse.
    """
    try:
        recipe = Recipe(**given).resolved()
    except RecipeError as exc:
        raise TrainingRefused(f"{_as_sentence(str(exc))}.") from None
    # What was asked for, and the epochs the progress counts; store_training_result replaces it
    # with what the run actually used.
    requested = {"epochs": recipe.epochs}
    requested.update(
        (name, getattr(recipe, name))
        for name in RECIPE_SETTINGS
        if given.get(name) is not None
    )
    with transaction.atomic():
        _claim_training_slot(refuse_if_training)
        return ModelVersion.objects.create(
            architecture=recipe.architecture,
            task=recipe.task,
            status=ModelVersion.Status.TRAINING,
            source=source,
            dataset_path=os.pathsep.join(data_folders(data_dir) or default_data_folders()),
            include_reviewed_cells=bool(include_reviewed),
            hyperparameters=requested,
            seed=recipe.seed if given.get("seed") is not None else None,
            progress={"state": "queued", "epoch": 0, "epochs": recipe.epochs},
            created_by=user,
        )


def _refit_recipe(refit_from, network, folders):
    """The settings of a refit of ``refit_from`` on every group of the data ``folders``, with its
    temperature: ``network`` (architecture, task, epochs), the run's inputs and augmentation, and
    its calibration."""
    borrowed = held_out_calibration(refit_from)
    try:
        borrowed.check_same_data(folders)
    except RefitDataMismatch as mismatch:
        raise TrainingRefused(
            f"A refit of v{refit_from.pk} learns from the data folders it did: "
            f"{', '.join(map(str, mismatch.run))}. Its temperature and review threshold were fitted on "
            "those, and would not fit a network trained on others.", setting="data_dir"
        ) from None
    try:
        settings, _ = borrowed.for_refit(network)
    except RefitMismatch as mismatch:
        if set(mismatch.differing) == {"epochs"}:
            _, run_epochs = mismatch.differing["epochs"]
            raise TrainingRefused(
                f"A refit of v{refit_from.pk} trains as long as it did: {count_of(run_epochs, 'epoch')}.",
                setting="epochs") from None
        raise TrainingRefused(
            f"v{refit_from.pk} is a {refit_from.architecture} / {refit_from.task} run: a refit "
            "must repeat its architecture and task.",
            setting=next((name for name in ("architecture", "task") if name in mismatch.differing), None),
        ) from None
    return {**settings, "validation_fraction": 0.0}


def _recorded_data_dir(version):
    """The data folders a version's run learns from, as a run's data_dir lists them."""
    return version.dataset_path or os.pathsep.join(default_data_folders())


def gone_data_folders(version):
    """Those of a training's recorded data folders that are not on this machine now: renamed,
    moved or removed since it was queued."""
    return [folder for folder in data_folders(_recorded_data_dir(version))
            if not Path(folder).expanduser().exists()]


def gone_data_folders_reason(folders):
    """Why a training whose data ``folders`` vanished failed, as its page shows it."""
    if len(folders) == 1:
        which = f"The data folder {folders[0]} is"
        remedy = "Put it back where it was, or start the training again on the folder where it is now."
    else:
        which = f"The data folders {', '.join(folders[:-1])} and {folders[-1]} are"
        remedy = ("Put them back where they were, or start the training again on the folders where they "
                  "are now.")
    return f"{which} no longer there (renamed or removed since the training was queued). {remedy}"


def training_settings(version):
    """The TrainingConfig of a version's run, by name: the recipe settings it asked for (the rest
    take the recipe's defaults when it runs), its data and, if asked, the reviewed cells."""
    requested = {key: value for key, value in version.hyperparameters.items() if key in RECIPE_SETTINGS}
    config = {
        "data_dir": _recorded_data_dir(version),
        "architecture": version.architecture,
        "task": version.task,
        "seed": version.seed,
        "runtime": settings.INFERENCE_RUNTIME,
        **requested,
    }
    if version.include_reviewed_cells:
        config["extra_samples"] = reviewed_cell_samples(version.task)
    return config


def refit_settings(held_out):
    """The settings of a held-out version that a refit of it repeats: inputs and augmentation."""
    return stored_refit_settings(held_out.hyperparameters, held_out.input_spec)


def start_training(
    user, architecture, epochs, include_reviewed=False, *, task=None, data_dir=None, refit_from=None
):
    """Create a version and queue its training on the `train` queue; one training at a time.

    With refit_from (a held-out run of the same recipe), the version trains on every group, keeps
    its last epoch and takes that run's temperature: how the bundled network is made.
    """
    if task is None:
        current = retrainable_active_version()
        task = current.task if current else ModelVersion.Task.FOUR_CLASS
    recipe = {"architecture": architecture, "task": task}
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    if refit_from is not None:
        recipe = _refit_recipe(refit_from, recipe, data_folders(data_dir) or default_data_folders())
    with transaction.atomic():
        version = create_training_version(
            data_dir=data_dir,
            source=ModelVersion.Source.SITE,
            user=user,
            include_reviewed=include_reviewed,
            **recipe,
        )
        # With the broker down the version waits, queued and unsent, and the reconciler sends it
        # when the broker answers; Cancel frees the training slot meanwhile.
        queue_training(version.pk)
    return version


def adaptation_cells(version):
    """The lab's reviewed cells an adaptation of ``version`` would learn from, and those of types
    it has no class for (classifier.training.adaptation.LabCells)."""
    return lab_cells(reviewed_cell_samples(photographs=True), version.task)


def start_adaptation(user):
    """Queue "Adapt to this lab": a fine-tune of the active version on the lab's reviewed cells
    (classifier.training.adaptation), as a new version on the `train` queue; one training at a
    time, cancelled and followed like a retraining."""
    base = ModelVersion.objects.defer("model_bytes").filter(status=ModelVersion.Status.ACTIVE).first()
    if base is None:
        raise TrainingRefused("No version is active: there is nothing to adapt.")
    cells = adaptation_cells(base)
    try:
        check_enough(cells, version=f"v{base.pk}")
    except TrainingDataError as exc:
        raise TrainingRefused(str(exc)) from None
    # The folders the run replays, checked as it will check them: a folder checked out without
    # its photographs (git-lfs pointers) made a version that failed seconds later.
    for folder in replay_folders(base)[0]:
        try:
            check_data_folder(folder, base.task)
        except TrainingDataError as exc:
            reason = _as_sentence(str(exc)).rstrip(".")
            raise TrainingRefused(f"{reason}. v{base.pk} learnt from this folder, and adapting it replays "
                                  "some of its photographs.") from None
    epochs = adaptation_epochs(cells.photographs)
    with transaction.atomic():
        _claim_training_slot()
        version = ModelVersion.objects.create(
            architecture=base.architecture,
            task=base.task,
            status=ModelVersion.Status.TRAINING,
            source=ModelVersion.Source.ADAPTED,
            adapted_from=base,
            dataset_path=base.dataset_path,
            include_reviewed_cells=True,
            hyperparameters={"epochs": epochs},
            seed=base.seed,
            progress={"state": "queued", "epoch": 0, "epochs": epochs},
            created_by=user,
        )
        queue_training(version.pk)
    return version


def replay_folders(version):
    """(the data folders a version learnt from that are on this machine, those that are not): a
    folder missing where it was is looked for among the configured ones by its name."""
    return found_folders(version.dataset_path, default_data_folders())


def adaptation_settings(version):
    """The AdaptationConfig of an adapting version, by name: the network it starts from, the
    lab's reviewed cells and the replayed data folders of that network."""
    base = version.adapted_from
    if base is None or not base.model_sha256:
        raise TrainingDataError("The version to adapt is gone or holds no network.")
    model_bytes = ModelVersion.objects.filter(pk=base.pk).values_list("model_bytes", flat=True).get()
    present, missing = replay_folders(base)
    metadata = {**classifier_metadata(base), "label": f"v{base.pk}", "model_sha256": base.model_sha256,
                "metrics": {"review": (base.metrics or {}).get("review")}}
    epochs, folds = adaptation_plan()
    windows = reviewed_cell_windows(with_image=True)
    photographs = {image_id for _, _, image_id in windows}
    return {
        "model_bytes": bytes(model_bytes),
        "metadata": metadata,
        "reviewed": reviewed_cell_samples(photographs=True, windows=windows),
        # A lab's photograph that is a replayed source's TEST file, byte for byte, is left out of
        # the adapted network's TEST figures, which would otherwise score cells it was tuned on.
        "lab_photograph_checksums": frozenset(
            SmearImage.objects.filter(pk__in=photographs).values_list("checksum", flat=True)),
        "data_dir": present,
        "missing_folders": missing,
        "epochs": epochs,
        "folds": folds,
        "runtime": settings.INFERENCE_RUNTIME,
    }


def cancel_training(version, user=None):
    """Stop a training: the version is cancelled at once, and once that is committed the worker
    terminates the process that trains it (the training loop's own check between batches is the
    fallback, e.g. for `manage.py train` in a terminal or with the broker down).

    Marking it here, rather than waiting for the worker, means a version whose worker died (or was
    never started) can still be cleared, and the result guard in run_training makes sure a run
    that finishes anyway never stores a network into it.
    """
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != ModelVersion.Status.TRAINING:
            raise TrainingRefused(f"Version v{version.pk} is {version.get_status_display().lower()}, "
                                  "not training.")
        who = user.get_username() if user is not None else "someone"
        version.cancel_requested = True
        version.cancelled_by = user
        version.status = ModelVersion.Status.CANCELLED
        version.failure_reason = f"Cancelled by {who}."
        version.finished_at = timezone.now()
        version.progress = dict(version.progress, state="cancelled")
        version.save(update_fields=["cancel_requested", "cancelled_by", "status", "failure_reason",
                                    "finished_at", "progress"])
        transaction.on_commit(lambda task_id=version.celery_task_id: stop_task(task_id))
    return version


def reviewed_cell_samples(task=None, photographs=False, windows=None):
    """(context window path, corrected type) for every reviewed cell whose window is on disk, each
    physical cell once with its newest review (selectors.reviewed_cell_windows); with photographs,
    a third item names the cell's photograph, so that an adaptation's cross-validation keeps a
    photograph's cells in one fold. ``windows``: reviewed_cell_windows(with_image=True), where the
    caller has read it already.

    With a task, labels that have no place in it are left out: a cell relabelled MONONUCLEAR under
    a binary network says nothing about which of the four types it is, and would otherwise fail
    the whole run.
    """
    storage = Cell._meta.get_field("window").storage
    if windows is None:
        windows = reviewed_cell_windows(with_image=True)
    samples = []
    for window, corrected, image_id in windows:
        if task is not None and task_class(corrected, task) is None:
            continue
        path = Path(storage.path(window))
        if path.is_file():
            photograph = (f"photograph {image_id}",) if photographs else ()
            samples.append((str(path), corrected, *photograph))
    return samples


def _update_progress(version_id, **changes):
    version = ModelVersion.objects.filter(pk=version_id).values_list("progress", flat=True).first()
    progress = dict(version or {}, **changes, updated_at=timezone.now().isoformat())
    # update(), not save(): a save would write back a stale cancel_requested over the user's click.
    ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.TRAINING).update(progress=progress)
    return progress


def _finish(version_id, status, reason="", result=None):
    """Record how a run ended, but only if the version is still training (not cancelled meanwhile)."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().filter(pk=version_id).first()
        if version is None or version.status != ModelVersion.Status.TRAINING:
            return version
        if result is not None and version.cancel_requested:
            status, reason, result = ModelVersion.Status.CANCELLED, "Cancelled.", None
        state = {ModelVersion.Status.READY: "done"}.get(status, str(status))
        version.progress = dict(version.progress, state=state, updated_at=timezone.now().isoformat())
        if result is not None:
            return store_training_result(version, result)
        version.status = status
        version.failure_reason = reason
        version.finished_at = timezone.now()
        version.save(update_fields=["status", "failure_reason", "finished_at", "progress"])
        return version


def _failure_reason(exc, adaptation=False):
    """The reason a run that raised ``exc`` failed, as the page shows it; ``adaptation``: the run
    was an "Adapt to this lab", which has no batch size or image count to change."""
    return _explained_failure(exc, adaptation) or _unexpected_failure(exc)


def _explained_failure(exc, adaptation=False):
    """The reason of a failure this module knows the cause and the remedy of (bad data, a full
    disk or database, no memory left), or None for an unexpected one."""
    if isinstance(exc, TrainingDataError):
        return str(exc)
    if is_database_full(exc):
        return (f"The trained network could not be stored: the database has no room left on its disk "
                f"({first_line(exc)}). Nothing of it was kept; free space for the database, then train "
                "again.")
    if isinstance(exc, OSError) and exc.errno in DISK_REFUSALS:
        # The run writes its network to the temporary folder before storing it (Keras saves to a path).
        where = f": {exc.filename}" if exc.filename else ""
        return (f"Training stopped: the training machine could not write its files ({exc.strerror}{where}). "
                f"It writes the network to its temporary folder (TMPDIR, here {tempfile.gettempdir()}) "
                "before storing it: free space there, then train again.")
    if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
        if adaptation:
            return f"The adaptation ran out of memory. {ADAPTATION_MEMORY_ADVICE}"
        return f"Training ran out of memory. {TRAINING_MEMORY_ADVICE}"
    return None


def _unexpected_failure(exc):
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"Training stopped with an unexpected error ({name}{': ' + detail if detail else ''})."


# The retraining form sets neither the batch size nor how many images: the command does.
TRAINING_MEMORY_ADVICE = (
    "Start it again; if it recurs, free memory on the training machine (another worker or program "
    "using it), or train at a terminal with a smaller batch or fewer images (manage.py train "
    "--batch-size 16, --max-images-per-class 1000).")
WORKER_DIED_REASON = (
    "The training worker stopped in the middle of this run (often because it ran out of memory). "
    f"{TRAINING_MEMORY_ADVICE}"
)
# An adaptation's size is the lab's reviewed cells and the replayed sample of the version's own
# sources: nothing a person sets. What helps is memory on the machine that runs it.
ADAPTATION_MEMORY_ADVICE = (
    "Press “Adapt to this lab” again; if it recurs, free memory on the training machine (another "
    "worker or program using it) or run the train worker on a machine with more."
)
ADAPTATION_WORKER_DIED_REASON = (
    "The training worker stopped in the middle of this adaptation (often because it ran out of "
    f"memory). {ADAPTATION_MEMORY_ADVICE}"
)


def worker_died_reason(version_id):
    """Why a run whose process died failed, with the advice that fits a training or an adaptation."""
    adapted = ModelVersion.objects.filter(pk=version_id, adapted_from__isnull=False).exists()
    return ADAPTATION_WORKER_DIED_REASON if adapted else WORKER_DIED_REASON


def fail_abandoned_training(version_id):
    """Mark a training failed whose process stopped sending its heartbeat; True if it was.

    The version lock and the second look make it safe beside a heartbeat written meanwhile and
    beside a second reconciler doing the same.
    """
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(pk=version_id).values_list("pk").first()
        if not abandoned_trainings().filter(pk=version_id).exists():
            return False
        _finish(version_id, ModelVersion.Status.FAILED, worker_died_reason(version_id))
    logger.warning("Training v%s marked failed: its worker stopped sending a heartbeat", version_id)
    return True


def run_training(version_id, progress_bar=False):
    """Train a version in status training and store the result as ready (never activated).

    Idempotent: a version that is not training, or that a live process already trains (a second
    delivery of its message), is left alone. One whose earlier process died (e.g. killed by the
    kernel's out-of-memory killer) is marked failed instead of looping on the same crash.
    """
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None or version.status != ModelVersion.Status.TRAINING:
        return version
    claim = claim_training(version_id)
    if claim == TrainingClaim.ABANDONED:
        return _finish(version_id, ModelVersion.Status.FAILED, worker_died_reason(version_id))
    if claim != TrainingClaim.CLAIMED:
        logger.info("Training v%s not started by this delivery: it is %s", version_id, claim)
        return ModelVersion.objects.filter(pk=version_id).first()
    with heartbeat(ModelVersion, version_id):
        return _train(version_id, version, progress_bar)


def _train(version_id, version, progress_bar):
    # Which process trains it: what an operator looks for before killing anything by hand.
    _update_progress(version_id, state="running", started_at=timezone.now().isoformat(),
                     process={"host": socket.gethostname(), "pid": os.getpid()})

    from classifier.training import TrainingConfig, train_classifier
    from classifier.training.adaptation import AdaptationConfig, adapt_classifier

    adapting = version.adapted_from_id is not None

    def run(on_epoch, should_stop):
        if adapting:
            return adapt_classifier(AdaptationConfig(**adaptation_settings(version)), on_epoch, should_stop)
        config = TrainingConfig(**training_settings(version))
        return train_classifier(config, on_epoch=on_epoch, should_stop=should_stop, progress_bar=progress_bar,
                                on_stage=on_stage)

    curve = []
    curve_keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

    def on_epoch(report):
        # An epoch's report carries its figures; an adaptation's report of the phase after its last
        # epoch (classifier.training.adaptation.PHASE_EVALUATING) has none to add to the curve.
        if "loss" in report:
            curve.append({k: report.get(k) for k in curve_keys})
        _update_progress(version_id, state="running", history=list(curve), **report)

    def on_stage(stage):
        # After the last epoch: what the run does now, and no time left to tell (not "0 s").
        _update_progress(version_id, state="running", stage=stage, eta_seconds=None, epochs_done=True)

    last_poll = [0.0, False]

    def should_stop():
        now = time.monotonic()
        if now - last_poll[0] >= settings.TRAINING_CANCEL_CHECK_SECONDS:
            last_poll[0] = now
            row = ModelVersion.objects.filter(pk=version_id).values_list("status", "cancel_requested").first()
            last_poll[1] = row is None or row[1] or row[0] != ModelVersion.Status.TRAINING
        return last_poll[1]

    try:
        result = run(on_epoch, should_stop)
    except TrainingCancelled:
        return _finish(version_id, ModelVersion.Status.CANCELLED, "Cancelled.")
    except KeyboardInterrupt as exc:
        _finish(version_id, ModelVersion.Status.CANCELLED,
                getattr(exc, "reason", "Interrupted at the terminal (Ctrl-C)."))
        raise
    except Exception as exc:  # every failure, MemoryError included, must end as a readable reason
        if isinstance(exc, TrainingDataError):
            reason = _failure_reason(exc)
            # A folder gone before the run read it is "does not exist"; gone after the run listed its
            # images, "some classes have no training images left". The cause is the folder, and an
            # adaptation, which replays what it finds of its folders, is not refused for it.
            if not adapting and (gone := gone_data_folders(version)):
                reason = gone_data_folders_reason(gone)
            logger.info("Training of model version v%s refused its data: %s", version_id, reason)
            return _finish(version_id, ModelVersion.Status.FAILED, reason)
        return _failed(version_id, exc, adapting, "Training of model version v%s failed")
    try:
        return _finish(version_id, ModelVersion.Status.READY, result=result)
    except Exception as exc:  # e.g. the database refused a very large network
        return _failed(version_id, exc, adapting, "Storing model version v%s failed")


def _failed(version_id, exc, adapting, what):
    """Mark the version failed with the reason of ``exc``. A failure whose reason says its cause and
    remedy (a full disk, no memory) is logged as that one line: `manage.py train` printed the run's
    traceback above the same reason, and a worker's log has nothing more to act on. An unexpected
    one is logged with its traceback, which is all there is to find its cause by."""
    reason = _explained_failure(exc, adapting)
    if reason is None:
        logger.exception(what, version_id)
        reason = _unexpected_failure(exc)
    else:
        logger.warning(f"{what}: %s", version_id, reason)
    return _finish(version_id, ModelVersion.Status.FAILED, reason)


@dataclass
class Reclassification:
    version: ModelVersion  # the active version the photographs were queued for
    queued: int  # photographs queued
    signed_skipped: list  # accession numbers of signed samples left untouched


class ReclassificationRefused(ValueError):
    """A user-facing reason why a re-classification queued nothing."""


class _SamplesArrived(Exception):
    """Photographs of samples a re-classification had not locked, uploaded or reopened as it locked
    the others', entered its query: it is rolled back, to start again with them."""


# Each try that meets such samples needs another upload or reopening to commit in that instant.
RECLASSIFY_TRIES = 3


def reclassify(samples=None, user=None):
    """Queue every image of the given samples (None: all samples) for the active version.

    Earlier cells are kept: each version's cells stay in the history beside the new ones. Signed
    samples are locked (webapp.services.locking): they are left untouched and named in the
    result; asked for signed samples alone, it refuses with SampleLocked.
    """
    version = ModelVersion.objects.defer("model_bytes").filter(status=ModelVersion.Status.ACTIVE).first()
    if version is None:
        raise NoActiveModel("No model version is active: activate one before re-classifying.")
    chosen = Sample.objects.all()
    if samples is not None:
        if isinstance(samples, Sample):
            samples = [samples]
        chosen = chosen.filter(pk__in=[sample.pk for sample in samples])
    for _ in range(RECLASSIFY_TRIES):
        try:
            done = _queue_again(version, chosen, samples, user)
        except _SamplesArrived:
            continue
        logger.info("%s queued %d image(s) for re-classification with v%s; %d signed sample(s) left as "
                    "they are", user.get_username() if user else "system", done.queued, version.pk,
                    len(done.signed_skipped))
        return done
    raise ReclassificationRefused("Samples were uploaded or reopened while the re-classification locked "
                                  "them, each time it tried: nothing was queued. Re-classify again in a "
                                  "moment.")


def _queue_again(version, chosen, samples, user):
    """One try of reclassify(): queues the photographs of the ``chosen`` samples it locked, or raises
    _SamplesArrived, having changed nothing."""
    with transaction.atomic():
        # The unsigned samples' rows locked first, as signing locks one (on PostgreSQL; SQLite takes
        # one writer at a time): a signature committed between reading that a sample is unsigned
        # and queueing its photographs left a signed result to be replaced by this version's calls.
        # One signed meanwhile drops out of the lock's rows when its signature commits.
        unsigned = chosen.exclude(status=Sample.Status.SIGNED)
        locked = list(unsigned.select_for_update().order_by("pk"))
        signed = list(chosen.filter(status=Sample.Status.SIGNED).order_by("pk"))
        if samples is not None and len(signed) == len(samples):
            for sample in signed:
                ensure_editable(sample, "re-classifying the sample")
        images = SmearImage.objects.filter(sample__in=unsigned)
        per_sample = {}
        # Their rows locked by id, as every writer of several photographs takes them: the UPDATE
        # below alone locks them in the order its plan reads them (queueing.send_classifications).
        for image_id, sample_id in images.select_for_update().order_by("pk").values_list("id", "sample_id"):
            per_sample.setdefault(sample_id, []).append(image_id)
        image_ids = [image_id for ids in per_sample.values() for image_id in ids]
        if per_sample.keys() - {sample.pk for sample in locked}:
            raise _SamplesArrived  # reopened since the samples' rows were locked: not among them
        # By the query that locked them, not by their ids: a large lab's hundreds of thousands of ids
        # passed SQLite's limit on a statement's variables, and made PostgreSQL's query megabytes.
        queued = images.update(
            status=SmearImage.Status.QUEUED, error="", requested_version=version,
            queued_at=timezone.now(), sent_at=None,
        )
        if queued != len(image_ids):
            # On PostgreSQL the query is read again at each statement: a sample reopened, or
            # uploaded, while the photographs' locks were taken is in it now, its row unlocked and
            # its photographs queued, yet neither counted, sent nor recorded.
            raise _SamplesArrived
        # In bulk: one INSERT a row held every sample's lock 2.5 s longer at 5,000 samples.
        audit.record_all("update", ((sample, {"requested_version": (None, version.label)},
                                     f"re-classification with {version.label} queued: "
                                     f"{count_of(len(per_sample[sample.pk]), 'photograph')}")
                                    for sample in locked if sample.pk in per_sample), actor=user)
        queue_classifications(image_ids)
    return Reclassification(version, len(image_ids), [sample.accession_number for sample in signed])
