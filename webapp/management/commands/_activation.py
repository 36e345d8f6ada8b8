"""Activating a version from a command, `activate_model` or `train --activate` (not a command: the
leading underscore keeps Django from listing it)."""

from django.core.management.base import CommandError

from webapp.presenters.models import activation_warning
from webapp.services.model_versions import ModelVersionError, activate_version


def activate_unless_warned(command, version, force):
    """Make ``version`` the one that serves, and say so on ``command``'s output, with what the site
    warns of it.

    Where the site would warn before activating it (no better than guessing, measured on nothing,
    worse than the version it was adapted from), it is refused unless ``force``: the site asks a
    person first, and a command, often run from a script, has nobody to ask."""
    warning = activation_warning(version)
    if warning and not force:
        raise CommandError(f"v{version.pk} was not activated: {warning} Activate it anyway with "
                           f"`manage.py activate_model {version.pk} --force`.")
    try:
        activate_version(version, user=None)
    except ModelVersionError as exc:
        raise CommandError(str(exc)) from None
    command.stdout.write(command.style.SUCCESS(f"v{version.pk} is now the active model."))
    if warning:
        command.stderr.write(command.style.WARNING(
            f"Warning: {warning} Activate another version to stop it."))
