import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.models import ModelVersion
from webapp.services.model_registry import NoActiveModel, active_version, load_classifier


class Command(BaseCommand):
    help = "Evaluate a stored model version on a labelled split: metrics table and confusion matrix."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Django's own --version (print Django's version) would shadow the model version option.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--version", type=int, help="model version id (default: the active one)")
        parser.add_argument("--data", default=str(settings.TRAINING_DATA_DIR))
        parser.add_argument("--split", default="TEST")

    def handle(self, *args, version=None, data, split, **options):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            model_version = ModelVersion.objects.get(pk=version) if version else active_version()
        except ModelVersion.DoesNotExist:
            raise CommandError(f"There is no model version {version}.") from None
        except NoActiveModel as exc:
            raise CommandError(str(exc)) from None
        if not model_version.model_sha256:
            raise CommandError(f"v{model_version.pk} is {model_version.get_status_display().lower()} "
                               "and holds no trained network.")
        from classifier.errors import TrainingDataError
        from classifier.metrics import format_metrics
        from classifier.training import evaluate_classifier

        classifier = load_classifier(model_version)
        try:
            metrics = evaluate_classifier(classifier, data, split=split)
        except TrainingDataError as exc:
            raise CommandError(str(exc)) from None
        label = f"v{model_version.pk} ({model_version.architecture}/{model_version.task}) on {data} {split}"
        self.stdout.write(format_metrics(metrics, title=label))
        if "binary" in metrics:
            self.stdout.write("")
            title = "binary grouping, summed from the types"
            self.stdout.write(format_metrics(metrics["binary"], title=title))
        without = metrics.get("without_same_cell_in_train")
        if without:
            self.stdout.write(f"\nwithout images of cells also in TRAIN: n={without['n']}  "
                              f"accuracy={without['accuracy']:.4f}")
        if metrics.get("skipped_files"):
            self.stdout.write(f"{metrics['skipped_files']} unreadable file(s) skipped")
