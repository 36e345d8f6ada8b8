"""The training recipe as command-line options, one per setting offered on the command line, for
``python -m classifier.train_cli``, ``manage.py train`` and bench/group_cv.py alike.

Every option defaults to None, "not given", so that the recipe resolves the default for the
architecture chosen, and a refit can tell the settings given from those it repeats.
"""

import argparse
import json

from classifier.training.recipe import SETTINGS, Offered


def _json_value(text):
    """A JSON setting's value (--input-spec, --source-weights): argparse would otherwise name the
    parser in its refusal ("invalid loads value"), which says nothing of what was expected."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object, such as '{{\"height\": 96}}', not {text!r} ({error.msg})"
        ) from None


# How each type of setting is read from the command line.
_PARSERS = {int: int, float: float, str: str, dict: _json_value}


def command_line_settings(exclude=()):
    return [
        s for s in SETTINGS if s.offered is not Offered.NOWHERE and s.name not in exclude
    ]


def add_recipe_arguments(parser, exclude=(), defaults=None):
    """Add an option for every recipe setting offered on the command line, but those in exclude.
    ``defaults`` gives, by setting name, the default in words where the command's differs from the
    recipe's (``manage.py train`` follows the active version's network)."""
    defaults = defaults or {}
    for setting in command_line_settings(exclude):
        options = dict(
            dest=setting.name,
            default=None,
            help=f"{setting.help} (default: {defaults.get(setting.name) or setting.default_text()})",
        )
        if setting.kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _PARSERS[setting.kind]
        if setting.choices:
            options["choices"] = setting.choices
        if setting.kind is dict:
            options["metavar"] = "JSON"
        parser.add_argument(setting.option, **options)


def recipe_given(values, exclude=()):
    """{setting: value} of the recipe options given; values is the parsed arguments (a Namespace
    or, as Django hands them to a command, a dict)."""
    values = values if isinstance(values, dict) else vars(values)
    return {
        s.name: values[s.name]
        for s in command_line_settings(exclude)
        if values.get(s.name) is not None
    }


def repeated_line(repeated):
    """The line that tells the operator which of the held-out run's settings a refit repeats."""
    listed = ", ".join(f"{key} {value}" for key, value in sorted(repeated.items()))
    return f"repeating the held-out run's settings: {listed}"
