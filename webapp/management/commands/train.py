import os
import signal
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError

from classifier.errors import TrainingDataError
from classifier.metrics import format_metrics, format_skipped
from classifier.runtimes import quiet_tensorflow_startup
from classifier.training.command_line import (
    add_recipe_arguments,
    recipe_given,
    repeated_line,
)
from classifier.training.data import absolute_folders, check_weights_name_folders, data_folders
from classifier.training.recipe import SETTINGS_BY_NAME, Recipe, RecipeError, RefitDataMismatch
from webapp.management.commands._activation import activate_unless_warned
from webapp.models import ModelVersion
from webapp.presenters.models import source_test_splits, without_copies
from webapp.services.training import (
    TrainingRefused,
    TrainingStopped,
    check_data,
    create_training_version,
    default_data_folders,
    held_out_calibration,
    retrainable_active_version,
    run_training,
    training_in_progress,
)
from webapp.wording import count_of

STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def signals_stop_training():
    """While inside, SIGTERM and SIGHUP raise TrainingStopped in the training's thread."""

    def stop(signum, frame):
        raise TrainingStopped(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def held_out_reports(version):
    """What to print of a trained version's figures: each data folder's TEST on the photographs it
    never trained on, or why one has no such figure; the validation split where no TEST gave one."""
    reports, measured = [], False
    for test in source_test_splits(version):
        if test.no_figure:
            reports.append(f"{test.no_figure}.")
            continue
        without = without_copies(test.also_in_train)
        title = f"v{version.pk} on {test.where} (held out)" + (f", {without}" if without else "")
        reports.append(format_metrics(test.held_out, title=title))
        measured = True
    validation = (version.metrics or {}).get("validation")
    if not measured and isinstance(validation, dict) and "confusion_matrix" in validation:
        reports.append(format_metrics(validation, title=f"v{version.pk} on the validation split"))
    return reports


def temperature_from(source):
    """The calibration (recipe.HeldOutCalibration) a refit borrows from a held-out run: a version
    number (7 or v7), or a run's model folder / metadata.json: a refit repeats its inputs and
    augmentation and takes its temperature and review threshold."""
    number = source.lower().removeprefix("v")
    if number.isdigit():
        version = ModelVersion.objects.defer("model_bytes").filter(pk=int(number)).first()
        if version is None:
            raise CommandError(f"There is no model version v{number}.")
        try:
            return held_out_calibration(version)
        except TrainingRefused as exc:
            raise CommandError(str(exc)) from None
    from classifier.training.held_out import temperature_of_run

    try:
        return temperature_of_run(source)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Train a new model version in this terminal and store it as ready (optionally activate it). "
        "With neither --arch nor --task it trains the active version's network and classes, as the "
        "retraining form does; a refit (--temperature-from) trains its held-out run's."
    )

    def add_arguments(self, parser):
        parser.add_argument("--data", action="append",
                            help="folder of TRAIN/CLASS/*.jpeg (and TEST/) or CLASS/*.jpeg; again for "
                                 "each further source (default: LEUKOSCOPE_TRAINING_DATA's folders)")
        # Every recipe setting offered on the command line; the network and classes follow the
        # active version's (follow_active_version), which their help says.
        add_recipe_arguments(parser, defaults={
            "architecture": "the active version's network when neither --arch nor --task is given, "
                            "a refit's held-out run's with --temperature-from; else leukonet",
            "task": "the active version's classes when neither --arch nor --task is given, a "
                    "refit's held-out run's with --temperature-from; else 4class",
        })
        parser.add_argument("--temperature-from", metavar="VERSION_OR_PATH",
                            help="calibration temperature of a held-out run of the same recipe: a model "
                                 "version number, or a model folder / metadata.json; the refit repeats "
                                 "its inputs and augmentation unless given here (not with --temperature)")
        parser.add_argument("--include-reviewed", action="store_true",
                            help="add every cell a technologist or hematologist confirmed or "
                                 "relabelled, with the type they gave it")
        parser.add_argument("--activate", action="store_true",
                            help="serve the new version when it is ready, unless the site would warn of it "
                                 "(no better than guessing, measured on nothing)")
        parser.add_argument("--force", action="store_true",
                            help="with --activate: serve it even where the site would warn of it")

    def recipe_settings(self, options, folders):
        """(the recipe settings asked for, the recipe they resolve to): those given, and a held-out
        run's for a refit of it on the data ``folders``."""
        given = recipe_given(options)
        if options["temperature_from"]:
            if options["temperature"] is not None:
                raise CommandError("Give --temperature or --temperature-from, not both.")
            borrowed = temperature_from(options["temperature_from"])
            try:
                given, repeated = borrowed.for_refit(given)
            except ValueError as exc:
                raise CommandError(f"Refused: {exc}.") from None
            try:
                borrowed.check_same_data(folders)
            except RefitDataMismatch as exc:
                raise CommandError(f"Refused: {exc} (--data).") from None
            if repeated:
                self.stdout.write(repeated_line(repeated))
        else:
            if options["temperature"] is not None:
                given["temperature_source"] = "given on the command line"
            self.follow_active_version(given)
        # Refused here, naming the options, before a version is stored.
        try:
            resolved = Recipe(**given).resolved()
        except RecipeError as exc:
            flags = [SETTINGS_BY_NAME[name].option for name in exc.settings]
            if "temperature" in exc.settings:
                flags.append("--temperature-from")
            raise CommandError(f"{exc} (options {', '.join(flags)}).") from None
        return given, resolved

    def follow_active_version(self, given):
        """With neither --arch nor --task, train the active version's network and classes, as the
        site's retraining form offers: a lab retrains the network it serves."""
        if "architecture" in given or "task" in given:
            return
        active = retrainable_active_version()
        if active is None:
            return
        given.update(architecture=active.architecture, task=active.task)
        self.stdout.write(
            f"Training the active version's network: {active.architecture} / {active.task} "
            f"(v{active.pk}); --arch and --task choose another."
        )

    def check_data(self, folders, data, task, source_weights):
        """Each of ``folders`` (those --data names, ``data``, else the configured ones), checked as
        the run (and `evaluate`) will check it, before a version is stored: a folder it cannot learn
        from is refused here, not left on the site as a failed version."""
        if not folders:
            raise CommandError("No training data folder: give --data, or set LEUKOSCOPE_TRAINING_DATA.")
        given = "--data" if data else "LEUKOSCOPE_TRAINING_DATA; --data names another"
        try:
            check_weights_name_folders(source_weights, folders)
        except TrainingDataError as exc:
            reason = str(exc)
            raise CommandError(f"{reason[:1].upper()}{reason[1:]} (--source-weights; {given}).") from None
        try:
            notes = check_data(folders, task)
        except TrainingRefused as exc:
            raise CommandError(f"{exc} ({given}).") from None
        for note in notes:
            self.stdout.write(f"Note: {note}")

    def handle(self, *args, **options):
        if options["force"] and not options["activate"]:
            raise CommandError("--force says to activate the new version even where the site would warn of "
                               "it: it goes with --activate.")
        quiet_tensorflow_startup(os.environ)
        if options["data"]:
            options["data"] = absolute_folders(options["data"])
        folders = data_folders(options["data"]) or default_data_folders()
        recipe, resolved = self.recipe_settings(options, folders)
        self.check_data(folders, options["data"], resolved.task, resolved.source_weights)
        beside = training_in_progress()
        if beside is not None:
            # Allowed (the terminal is the operator's own), but said: on a lab's two cores both
            # trainings then take about twice as long (the model audit started one unawares).
            self.stderr.write(self.style.WARNING(
                f"Note: v{beside.pk} is training too ({beside.get_source_display().lower()}); both share "
                "this machine's cores, and each will take about twice as long."))
        try:
            version = create_training_version(
                data_dir=options["data"],
                source=ModelVersion.Source.COMMAND,
                include_reviewed=options["include_reviewed"],
                # The terminal is the operator's own: a site training may run beside it.
                refuse_if_training=False,
                **recipe,
            )
        except TrainingRefused as exc:
            raise CommandError(str(exc)) from None
        epochs = version.hyperparameters["epochs"]
        self.stdout.write(
            f"Training v{version.pk}: {version.architecture} / {version.task}, {count_of(epochs, 'epoch')}, "
            f"data {version.dataset_path}"
        )
        try:
            with signals_stop_training():
                run_training(version.pk, progress_bar=True)
        except TrainingStopped as exc:
            raise CommandError(f"{exc.signal_name}: v{version.pk} is marked cancelled.",
                               returncode=128 + signal.Signals[exc.signal_name]) from None
        except KeyboardInterrupt:
            raise CommandError(f"Interrupted: v{version.pk} is marked cancelled.", returncode=130) from None
        try:
            version.refresh_from_db()
        except ModelVersion.DoesNotExist:
            # Cancelled on the site, then deleted there, while this terminal trained it.
            raise CommandError(
                f"v{version.pk} was deleted while it trained: nothing of it was kept.") from None
        if version.status == ModelVersion.Status.FAILED:
            raise CommandError(f"Training failed (v{version.pk} marked failed): {version.failure_reason}")
        if version.status != ModelVersion.Status.READY:
            raise CommandError(f"v{version.pk} ended {version.get_status_display().lower()}: "
                               f"{version.failure_reason}")
        for report in held_out_reports(version):
            self.stdout.write(report)
        self.stdout.write(self.style.SUCCESS(
            f"v{version.pk} is ready ({version.training_seconds:.0f} s, {version.size_bytes / 1e6:.2f} MB)."))
        for line in format_skipped(version.metrics.get("skipped_files"), version.metrics.get("skipped_named"),
                                   "training and validation"):
            self.stdout.write(line)
        if options["activate"]:
            activate_unless_warned(self, version, options["force"])
        else:
            self.stdout.write(f"Activate it with: manage.py activate_model {version.pk}")
