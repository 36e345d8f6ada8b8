import importlib
import sys

from django.conf import settings
from django.core.management.base import CommandError

from webapp.management.commands._model_version_command import ModelVersionCommand
from webapp.services.model_registry import load_classifier


class Command(ModelVersionCommand):
    help = "Benchmark the active (or a named) model version with bench/classify.py on a TEST split."

    def handle(self, *args, version=None, data, **options):
        model_version = self.trained_version(version)
        # bench/ is a folder of scripts beside the project, not an installed package.
        if str(settings.BASE_DIR) not in sys.path:
            sys.path.insert(0, str(settings.BASE_DIR))
        bench = importlib.import_module("bench.classify")
        from classifier.errors import TrainingDataError

        classifier = load_classifier(model_version)
        classifier.metadata.setdefault("size_bytes", model_version.size_bytes)
        self.stdout.write(
            f"Benchmarking v{model_version.pk} ({model_version.architecture}/{model_version.task})"
        )
        try:
            report = bench.run_benchmark(classifier, data, settings.REVIEW_CONFIDENCE_THRESHOLD)
        except (TrainingDataError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        bench.print_report(report)
