import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from classifier.runtimes import quiet_tensorflow_startup
from webapp.models import ModelVersion
from webapp.services.model_versions import ModelVersionError, activate_version
from webapp.services.training import (
    TrainingRefused,
    architecture_names,
    create_training_version,
    default_epochs,
    held_out_temperature,
    refit_settings,
    run_training,
)


def held_out_metrics(metrics):
    """(title, metrics) of the figure to report: TEST when the data had one, else validation."""
    for key, title in (("TEST", "held-out TEST split"), ("validation", "validation split")):
        if isinstance(metrics.get(key), dict) and "confusion_matrix" in metrics[key]:
            return title, metrics[key]
    return None, None


def temperature_from(source):
    """(temperature, where from, settings to repeat) of a held-out run: a version number (7 or
    v7), or a run's model folder / metadata.json: a refit repeats its inputs and augmentation."""
    number = source.lower().removeprefix("v")
    if number.isdigit():
        version = ModelVersion.objects.defer("model_bytes").filter(pk=int(number)).first()
        if version is None:
            raise CommandError(f"There is no model version v{number}.")
        try:
            return (*held_out_temperature(version), refit_settings(version))
        except TrainingRefused as exc:
            raise CommandError(str(exc)) from None
    from classifier.calibration import temperature_of_run

    try:
        return temperature_of_run(source)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = "Train a new model version in this terminal and store it as ready (optionally activate it)."

    def add_arguments(self, parser):
        parser.add_argument("--data", default=str(settings.TRAINING_DATA_DIR),
                            help="folder of TRAIN/CLASS/*.jpeg (and TEST/) or CLASS/*.jpeg")
        parser.add_argument("--arch", default="leukonet", choices=architecture_names())
        parser.add_argument("--task", default=ModelVersion.Task.FOUR_CLASS, choices=ModelVersion.Task.values)
        parser.add_argument("--epochs", type=int, help="default: the architecture's own")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--seed", type=int)
        parser.add_argument("--lr", type=float, help="peak learning rate (default: the architecture's)")
        parser.add_argument("--mixup", type=float,
                            help="mixup Beta(a, a); 0 = off (default: the architecture's)")
        parser.add_argument("--validation-seed", type=int,
                            help="seed of the group validation split (default: --seed)")
        parser.add_argument("--validation-fraction", type=float,
                            help="share of TRAIN groups held out per class (default 0.15); 0 trains on "
                                 "every group (a refit: the last epoch is kept, and --temperature-from "
                                 "is required)")
        parser.add_argument("--temperature-from", metavar="VERSION_OR_PATH",
                            help="calibration temperature of a held-out run of the same recipe: a model "
                                 "version number, or a model folder / metadata.json")
        parser.add_argument("--max-images-per-class", type=int,
                            help="train on a random subset (quick trials)")
        parser.add_argument("--include-reviewed", action="store_true",
                            help="add the cells technologists relabelled, with their corrected type")
        parser.add_argument("--activate", action="store_true", help="serve the new version when it is ready")

    def handle(self, *args, **options):
        quiet_tensorflow_startup(os.environ)
        epochs = options["epochs"] or default_epochs(options["arch"])
        given = {"mixup": options["mixup"], "validation_seed": options["validation_seed"],
                 "validation_fraction": options["validation_fraction"],
                 "batch_size": options["batch_size"], "learning_rate": options["lr"]}
        recipe = {key: value for key, value in given.items() if value is not None}
        if options["temperature_from"]:
            temperature, source, repeated = temperature_from(options["temperature_from"])
            # Options given on the command line win over what the held-out run used.
            recipe = {**repeated, **recipe, "temperature": temperature, "temperature_source": source}
        if options["validation_fraction"] is not None:
            from classifier.errors import TrainingDataError
            from classifier.training import check_validation_split

            # Refused here, before a version is stored, rather than failing it once queued.
            try:
                check_validation_split(options["validation_fraction"], recipe.get("temperature"))
            except TrainingDataError as exc:
                raise CommandError(f"{exc} (options --validation-fraction, --temperature-from).") from None
        try:
            version = create_training_version(
                architecture=options["arch"],
                task=options["task"],
                epochs=epochs,
                data_dir=options["data"],
                source=ModelVersion.Source.COMMAND,
                include_reviewed=options["include_reviewed"],
                seed=options["seed"],
                max_images_per_class=options["max_images_per_class"],
                # The terminal is the operator's own: a site training may run beside it.
                refuse_if_training=False,
                **recipe,
            )
        except TrainingRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Training v{version.pk}: {version.architecture} / {version.task}, {epochs} epoch(s), "
            f"data {version.dataset_path}"
        )
        try:
            run_training(version.pk, progress_bar=True)
        except KeyboardInterrupt:
            raise CommandError(f"Interrupted: v{version.pk} is marked cancelled.", returncode=130) from None
        version.refresh_from_db()
        if version.status == ModelVersion.Status.FAILED:
            raise CommandError(f"Training failed (v{version.pk} marked failed): {version.failure_reason}")
        if version.status != ModelVersion.Status.READY:
            raise CommandError(f"v{version.pk} ended {version.get_status_display().lower()}: "
                               f"{version.failure_reason}")
        from classifier.metrics import format_metrics

        title, metrics = held_out_metrics(version.metrics)
        if metrics:
            self.stdout.write(format_metrics(metrics, title=f"v{version.pk} on the {title}"))
        self.stdout.write(self.style.SUCCESS(
            f"v{version.pk} is ready ({version.training_seconds:.0f} s, {version.size_bytes / 1e6:.2f} MB)."))
        if options["activate"]:
            try:
                activate_version(version, user=None)
            except ModelVersionError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(self.style.SUCCESS(f"v{version.pk} is now the active model."))
        else:
            self.stdout.write(f"Activate it with: manage.py activate_model {version.pk}")
