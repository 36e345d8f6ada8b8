"""The site's retraining form, `manage.py train` and `python -m classifier.train_cli` offer exactly the
training recipe's settings (classifier/training/recipe.py), and a value given on any of them reaches
the run."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import BaseCommand
from django.urls import reverse
from PIL import Image

import classifier.train_cli
import classifier.training
from classifier.errors import TrainingDataError
from classifier.training.recipe import SETTINGS, Offered, Recipe
from tests.webapp.lab_factories import with_role
from webapp.forms_models import RetrainForm
from webapp.management.commands.train import Command as TrainCommand
from webapp.models import ModelVersion

ON_FORM = {s.name for s in SETTINGS if s.offered is Offered.EVERYWHERE}
ON_COMMAND_LINE = {s.name for s in SETTINGS if s.offered in (Offered.EVERYWHERE, Offered.COMMAND_LINE)}
# What each surface asks beyond the recipe: the run's data, a held-out run to calibrate a refit with,
# and what to do with the result.
FORM_RUN_FIELDS = {"include_reviewed", "data_sources", "data_dir", "refit_from"}
COMMAND_RUN_OPTIONS = {"data", "temperature_from", "include_reviewed", "activate", "force"}
CLI_RUN_OPTIONS = {"data", "temperature_from", "no_test", "cache_dir", "out", "mark_default", "quiet"}
# Settings only an ImageNet-initialised network takes: given with the other settings' other values
# (architecture paper), the recipe refuses them; they are given on their own below.
# MixStyle sits in LeukoNet's layers: refused for paper, likewise given on its own below.
PRETRAINED_ONLY = {"freeze_trunk"}
LEUKONET_ONLY = {"mixstyle"}


def option_dests(parser, leave_out=()):
    return {action.dest for action in parser._actions} - {"help", *leave_out}


@pytest.mark.django_db
def test_each_surface_offers_exactly_the_recipe_settings_offered_there():
    assert ON_FORM and ON_FORM < ON_COMMAND_LINE
    assert {s.name for s in SETTINGS} - ON_COMMAND_LINE == {"temperature_source", "review_threshold"}

    form = RetrainForm()
    assert set(form.fields) == ON_FORM | FORM_RUN_FIELDS
    assert list(form.fields)[: len(ON_FORM)] == [s.name for s in SETTINGS if s.name in ON_FORM]

    django_options = option_dests(BaseCommand().create_parser("manage.py", "base"))
    command = TrainCommand().create_parser("manage.py", "train")
    assert option_dests(command, django_options) == ON_COMMAND_LINE | COMMAND_RUN_OPTIONS

    cli = classifier.train_cli.build_parser()
    assert option_dests(cli) == ON_COMMAND_LINE | CLI_RUN_OPTIONS

    for parser in (command, cli):
        flags = {flag for action in parser._actions for flag in action.option_strings}
        assert {s.option for s in SETTINGS if s.name in ON_COMMAND_LINE} <= flags
    # The published names of two options.
    assert {"--arch", "--lr"} <= flags


def other_values(names):
    """A value for each setting that is not its default, settings before it being set already."""
    chosen = {}
    for setting in SETTINGS:
        if setting.name not in names:
            continue
        default = getattr(Recipe(**chosen).resolved(), setting.name)
        if setting.choices:
            value = next(choice for choice in setting.choices if choice != default)
        elif setting.kind is bool:
            value = not default
        elif setting.kind is dict:
            value = {**default, "height": 64}
        elif setting.kind is int:
            value = 2 if default is None else default + 1
        elif setting.kind is float:
            value = 0.5 if default is None else default + 0.05
        else:
            value = f"{default}-given"
        chosen[setting.name] = value
    Recipe(**chosen).resolved()
    return chosen


def given_for(data, values):
    """``values`` with source weights that name the run's data folder, as a run requires."""
    return {**values, "source_weights": {data.resolve().name: 2.0}}


def as_arguments(values):
    arguments = []
    for name, value in values.items():
        option = "--" + ("no-" if value is False else "")
        option = next(s.option for s in SETTINGS if s.name == name).replace("--", option, 1)
        arguments.append(option)
        if not isinstance(value, bool):
            arguments.append(json.dumps(value) if isinstance(value, dict) else str(value))
    return arguments


def smallest_data_folder(folder):
    """The fewest images a run of any task takes (two of each of the eight types): the form and the
    command refuse folders that together hold fewer, before a version exists."""
    from classifier.labels import EIGHT_CLASSES

    for name in EIGHT_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for n in range(2):
            Image.new("RGB", (64, 48), (220, 190, 200)).save(folder / name / f"cell{n}.png")
    return folder


@pytest.fixture
def caught_runs(monkeypatch, tmp_path):
    """The TrainingConfig of every run, which then stops before it loads anything."""
    # The tests' --data: a folder-per-class layout with an image, as train and the form check.
    smallest_data_folder(tmp_path)
    configs = []

    def train_classifier(config, **_):
        configs.append(config)
        raise TrainingDataError("stopped by the test")

    monkeypatch.setattr(classifier.training, "train_classifier", train_classifier)
    monkeypatch.setattr(classifier.train_cli, "train_classifier", train_classifier)
    return configs


def test_every_setting_given_to_train_cli_reaches_the_run(caught_runs, tmp_path):
    values = given_for(tmp_path, other_values(ON_COMMAND_LINE - PRETRAINED_ONLY - LEUKONET_ONLY))
    assert classifier.train_cli.main(["--data", str(tmp_path), *as_arguments(values)]) == 2
    (config,) = caught_runs
    assert {name: getattr(config, name) for name in values} == values
    assert config.temperature_source == "given on the command line"


@pytest.mark.django_db
def test_every_setting_given_to_manage_py_train_reaches_the_version_and_its_run(caught_runs, tmp_path):
    values = given_for(tmp_path, other_values(ON_COMMAND_LINE - PRETRAINED_ONLY - LEUKONET_ONLY))
    with pytest.raises(CommandError, match="stopped by the test"):
        call_command("train", "--data", str(tmp_path), *as_arguments(values))
    version = ModelVersion.objects.get()
    assert (version.architecture, version.task, version.seed) == (
        values["architecture"], values["task"], values["seed"])
    assert version.hyperparameters["validation_fraction"] == values["validation_fraction"]
    (config,) = caught_runs
    assert {name: getattr(config, name) for name in values} == values


@pytest.mark.django_db
def test_mixstyle_given_on_either_command_line_reaches_the_run(caught_runs, tmp_path):
    given = ["--data", str(tmp_path), "--arch", "leukonet-gn", "--mixstyle", "0.5"]
    assert classifier.train_cli.main(given) == 2
    with pytest.raises(CommandError, match="stopped by the test"):
        call_command("train", *given)
    assert [(config.architecture, config.mixstyle) for config in caught_runs] == [("leukonet-gn", 0.5)] * 2
    assert ModelVersion.objects.get().hyperparameters["mixstyle"] == 0.5


@pytest.mark.django_db
def test_a_frozen_imagenet_trunk_given_on_either_command_line_reaches_the_run(caught_runs, tmp_path):
    given = ["--data", str(tmp_path), "--arch", "effnet-lite0", "--freeze-trunk"]
    assert classifier.train_cli.main(given) == 2
    with pytest.raises(CommandError, match="stopped by the test"):
        call_command("train", *given)
    assert [(config.architecture, config.freeze_trunk) for config in caught_runs] == [
        ("effnet-lite0", True)] * 2
    assert ModelVersion.objects.get().hyperparameters["freeze_trunk"] is True


@pytest.mark.django_db
def test_every_setting_on_the_retraining_form_reaches_the_version(client, django_user_model, tmp_path):
    client.force_login(with_role(django_user_model.objects.create_user("lead", password="x-long-pass-1",
                                                                       is_staff=True), "admin"))
    values = other_values(ON_FORM)
    form = RetrainForm()
    assert {name: form.initial[name] for name in ON_FORM} == {
        name: getattr(Recipe().resolved(), name) for name in ON_FORM}
    # The enqueue waits for a commit that a test's transaction never makes: nothing is queued.
    data = smallest_data_folder(tmp_path)
    response = client.post(reverse("models:train"), {**values, "data_dir": str(data)})
    assert response.status_code == 302
    version = ModelVersion.objects.get()
    recorded = {"architecture": version.architecture, "task": version.task, **version.hyperparameters}
    assert set(values) <= set(recorded), "the page's view hands every setting of the form to the run"
    assert {name: recorded[name] for name in values} == values


def test_a_json_setting_that_is_not_json_is_refused_saying_so(capsys):
    """argparse named the parser instead ("invalid loads value: '{bad'"), which said nothing of JSON."""
    with pytest.raises(SystemExit) as stopped:
        classifier.train_cli.main(["--data", "unused", "--input-spec", "{bad"])
    assert stopped.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --input-spec: expected a JSON object, such as " in last_line, last_line
    assert "loads" not in last_line
