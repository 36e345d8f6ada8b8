"""Choosing a stored model version by a command option, for `evaluate` and bench/classify.py (not a
command: the leading underscore keeps Django from listing it)."""

import os

from django.core.management.base import BaseCommand, CommandError

from classifier.runtimes import quiet_tensorflow_startup
from webapp.models import ModelVersion
from webapp.services.model_registry import NoActiveModel, active_version


class ModelVersionCommand(BaseCommand):
    """Takes `--version N` (default: the active version) and `--data DIR`, once or more."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Django's own --version (print Django's version) would shadow the model version option.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--version", type=int, help="model version id (default: the active one)")
        parser.add_argument("--data", action="append",
                            help="a data folder (TRAIN/ and TEST/, or class folders); give it again for "
                                 "each folder (default: LEUKOSCOPE_TRAINING_DATA's folders)")

    def trained_version(self, version):
        """The named (or active) version, or a one-line CommandError when it has no network."""
        quiet_tensorflow_startup(os.environ)
        try:
            model_version = ModelVersion.objects.get(pk=version) if version is not None else active_version()
        except ModelVersion.DoesNotExist:
            raise CommandError(f"There is no model version {version}.") from None
        except NoActiveModel as exc:
            raise CommandError(str(exc)) from None
        if not model_version.model_sha256:
            raise CommandError(
                f"v{model_version.pk} is {model_version.get_status_display().lower()} "
                "and holds no trained network."
            )
        return model_version
