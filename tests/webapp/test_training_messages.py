"""What the training surfaces say about themselves: `manage.py train --help`, the retraining form's
"Include reviewed cells", and the advice a failed adaptation gives."""

from datetime import timedelta

import pytest
from django.utils import timezone

from webapp.forms_models import RetrainForm
from webapp.management.commands.train import Command as TrainCommand
from webapp.models import ModelVersion
from webapp.services import training


def option_help(parser, flag):
    action = next(action for action in parser._actions if flag in action.option_strings)
    return action.help


def test_train_help_says_the_network_and_classes_follow_the_active_version():
    parser = TrainCommand().create_parser("manage.py", "train")
    arch, task = option_help(parser, "--arch"), option_help(parser, "--task")
    # The description says the active version's network and classes are trained by default: the
    # options' own defaults must not say otherwise.
    assert "(default: leukonet)" not in arch and "(default: 4class)" not in task
    assert "the active version's network when neither --arch nor --task is given" in arch
    assert arch.endswith("else leukonet)") and task.endswith("else 4class)")
    assert "the active version's classes when neither --arch nor --task is given" in task
    assert "relabelled" in option_help(parser, "--include-reviewed")
    assert "confirmed" in option_help(parser, "--include-reviewed")


@pytest.mark.django_db
def test_include_reviewed_says_confirmed_cells_join_too():
    words = RetrainForm().fields["include_reviewed"].help_text
    assert "confirmed" in words and "relabelled" in words
    assert "every cell a technologist relabelled" not in words


def running_version(**fields):
    return ModelVersion.objects.create(
        architecture="paper", task="4class", status=ModelVersion.Status.TRAINING,
        progress={"state": "running", "epoch": 2, "epochs": 30},
        heartbeat_at=timezone.now() - timedelta(hours=1), **fields,
    )


@pytest.mark.django_db
def test_a_killed_adaptation_gives_advice_an_adaptation_can_follow(settings):
    settings.WORKER_LOST_AFTER = 60
    base = ModelVersion.objects.create(architecture="paper", task="4class", status="active")
    adapting = running_version(source=ModelVersion.Source.ADAPTED, adapted_from=base)
    retraining = running_version(source=ModelVersion.Source.SITE)

    assert training.fail_abandoned_training(adapting.pk)
    assert training.fail_abandoned_training(retraining.pk)

    reason = ModelVersion.objects.get(pk=adapting.pk).failure_reason
    assert "batch size" not in reason and "fewer images" not in reason
    assert "adaptation" in reason and "Adapt to this lab" in reason
    # A retraining keeps the advice that fits it.
    assert ModelVersion.objects.get(pk=retraining.pk).failure_reason == training.WORKER_DIED_REASON


def test_an_adaptation_out_of_memory_gives_no_batch_size_advice():
    adapting = training._failure_reason(MemoryError(), adaptation=True)
    assert "batch size" not in adapting and "fewer images" not in adapting
    assert "Adapt to this lab" in adapting
    assert "--batch-size 16" in training._failure_reason(MemoryError())


def test_the_memory_advice_names_options_the_command_takes():
    """It said "try a smaller batch size or fewer images", which the retraining form, where a lab
    meets the message, offers no field for: it names the command's options, which must exist."""
    import re

    from classifier.training.recipe import SETTINGS_BY_NAME

    options = {setting.option for setting in SETTINGS_BY_NAME.values()}
    for reason in (training._failure_reason(MemoryError()), training.WORKER_DIED_REASON):
        named = set(re.findall(r"--[a-z-]+", reason))
        assert named == {"--batch-size", "--max-images-per-class"} and named <= options
