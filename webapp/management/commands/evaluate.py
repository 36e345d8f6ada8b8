from django.core.management.base import CommandError

from classifier.errors import TrainingDataError
from classifier.metrics import format_metrics
from webapp.management.commands._model_version_command import ModelVersionCommand
from webapp.services.model_registry import load_classifier
from webapp.wording import count_of


class Command(ModelVersionCommand):
    help = "Evaluate a stored model version on a labelled split: metrics table and confusion matrix."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--split", default="TEST")

    def handle(self, *args, version=None, data, split, **options):
        model_version = self.trained_version(version)
        from classifier.training import evaluate_classifier  # TensorFlow: only when a command evaluates

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
            self.stdout.write(f"{count_of(metrics['skipped_files'], 'unreadable file')} skipped")
