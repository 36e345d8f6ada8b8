import importlib
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.models import ModelVersion
from webapp.services.model_registry import NoActiveModel, active_version, load_classifier


class Command(BaseCommand):
    help = "Benchmark the active (or a named) model version with bench/classify.py on a TEST split."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Django's own --version (print Django's version) would shadow the model version option.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--version", type=int, help="model version id (default: the active one)")
        parser.add_argument("--data", default=str(settings.TRAINING_DATA_DIR))

    def handle(self, *args, version=None, data, **options):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            model_version = ModelVersion.objects.get(pk=version) if version else active_version()
        except ModelVersion.DoesNotExist:
            raise CommandError(f"There is no model version {version}.") from None
        except NoActiveModel as exc:
            raise CommandError(str(exc)) from None
        if not model_version.model_sha256:
            raise CommandError(f"v{model_version.pk} holds no trained network.")
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
            report = bench.run_benchmark(classifier, data)
        except (TrainingDataError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        bench.print_report(report)
