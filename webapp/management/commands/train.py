import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.models import ModelVersion
from webapp.services.model_versions import ModelVersionError, activate_version
from webapp.services.training import (
    TrainingRefused,
    architecture_names,
    create_training_version,
    default_epochs,
    run_training,
)


def held_out_metrics(metrics):
    """(title, metrics) of the figure to report: TEST when the data had one, else validation."""
    for key, title in (("TEST", "held-out TEST split"), ("validation", "validation split")):
        if isinstance(metrics.get(key), dict) and "confusion_matrix" in metrics[key]:
            return title, metrics[key]
    return None, None


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
        parser.add_argument("--max-images-per-class", type=int,
                            help="train on a random subset (quick trials)")
        parser.add_argument("--include-reviewed", action="store_true",
                            help="add the cells technologists relabelled, with their corrected type")
        parser.add_argument("--activate", action="store_true", help="serve the new version when it is ready")

    def handle(self, *args, **options):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
        epochs = options["epochs"] or default_epochs(options["arch"])
        try:
            version = create_training_version(
                architecture=options["arch"],
                task=options["task"],
                epochs=epochs,
                data_dir=options["data"],
                source=ModelVersion.Source.COMMAND,
                include_reviewed=options["include_reviewed"],
                batch_size=options["batch_size"],
                seed=options["seed"],
                max_images_per_class=options["max_images_per_class"],
                # The terminal is the operator's own: a site training may run beside it.
                refuse_if_training=False,
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
