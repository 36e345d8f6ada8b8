"""Forms of the staff-only model pages: retraining and re-classification."""

import os

from django import forms
from django.conf import settings

from classifier.dataset import unreadable_reason
from classifier.training.data import data_folders, distinct_folders
from classifier.training.recipe import SETTINGS, Offered, Recipe
from webapp.models import ModelVersion
from webapp.selectors import samples_with_accession
from webapp.services.training import (
    DATA_FOLDER_EXPECTED,
    TooFewImages,
    UnusableDataFolder,
    check_data,
    default_data_folders,
    held_out_runs,
    outside_training_roots,
    retrainable_active_version,
)
from webapp.wording import count_of

# A site user holds the one training slot for as long as the run lasts; longer runs are for the
# command line.
MAX_EPOCHS = 200
# The site's own limits and words for some recipe settings.
FORM_MAXIMA = {"epochs": MAX_EPOCHS}
CHOICE_LABELS = {"task": dict(ModelVersion.Task.choices)}


def recipe_field(setting):
    """The form field of a recipe setting (classifier.training.recipe), from its type and limits."""
    required = setting.default is not None and setting.kind is not bool
    options = {"required": required}
    if setting.choices:
        labels = CHOICE_LABELS.get(setting.name, {})
        choices = [(value, labels.get(value, value)) for value in setting.choices]
        return forms.ChoiceField(choices=choices, **options)
    if setting.kind in (int, float):
        field = forms.IntegerField if setting.kind is int else forms.FloatField
        low = setting.at_least if setting.at_least is not None else setting.above
        return field(min_value=low, max_value=FORM_MAXIMA.get(setting.name), **options)
    fields = {bool: forms.BooleanField, dict: forms.JSONField, str: forms.CharField}
    return fields[setting.kind](**options)


def form_settings():
    return [s for s in SETTINGS if s.offered is Offered.EVERYWHERE]


def _training_roots():
    """settings.TRAINING_DATA_ROOTS as the form names them ("" for none)."""
    return ", ".join(str(root) for root in settings.TRAINING_DATA_ROOTS)


class RetrainForm(forms.Form):
    """The recipe settings offered on the site (classifier.training.recipe: Offered.EVERYWHERE),
    then the run's own: its data and, for a refit, the held-out run it repeats."""

    include_reviewed = forms.BooleanField(
        required=False,
        label="Include reviewed cells",
        help_text="Add every cell a technologist or hematologist reviewed, whether they confirmed its type "
        "or relabelled it, with the type they gave it (types the task has no class for are left out).",
    )
    data_sources = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Training data folders",
        help_text="Each one lab's photographs: trained on together, measured apart.",
    )
    data_dir = forms.CharField(
        required=False,
        max_length=1024,
        label="Other data folder",
        help_text=f"Its full path on the training machine, holding TRAIN/CLASS/*.jpeg (with TEST/ "
        f"for held-out figures) or CLASS/*.jpeg; several separated by “{os.pathsep}”. With no "
        "folder ticked or given: every configured one. {roots_rule}",
    )

    refit_from = forms.ModelChoiceField(
        queryset=ModelVersion.objects.none(),
        required=False,
        label="Refit on every group",
        empty_label="No: hold out a validation split",
        help_text="Train on all of the data, keep the last epoch and take the calibration of this "
        "held-out run of the same recipe: how the bundled network is made. Set the architecture, "
        "task and epochs to the chosen run's.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields = {**{s.name: recipe_field(s) for s in form_settings()}, **self.fields}
        refit = self.fields["refit_from"]
        refit.queryset = held_out_runs()
        refit.label_from_instance = lambda version: (
            f"v{version.pk}: {version.architecture} / {version.task}, "
            f"{count_of(version.hyperparameters.get('epochs') or 0, 'epoch')}, "
            f"temperature {version.temperature:.3f}"
        )
        for name, value in self._recipe_initial().items():
            self.initial.setdefault(name, value)
        other = self.fields["data_dir"]
        roots = _training_roots()
        other.help_text = other.help_text.format(roots_rule=(
            f"The site reads folders under {roots} only." if roots
            else "LEUKOSCOPE_TRAINING_DATA_ROOTS names no folder: the site reads none typed here."))
        configured = default_data_folders()
        self.fields["data_sources"].choices = [(folder, folder) for folder in configured]
        self.initial.setdefault("data_sources", configured)

    @staticmethod
    def _recipe_initial():
        """The recipe's defaults for the active version's architecture and task (else its own)."""
        active = retrainable_active_version()
        network = {} if active is None else {"architecture": active.architecture, "task": active.task}
        recipe = Recipe(**network).resolved()
        return {s.name: getattr(recipe, s.name) for s in form_settings()}

    def clean(self):
        """The run's data folders, ticked and given, as one os.pathsep-separated data_dir."""
        data = super().clean()
        given = data_folders(data.get("data_dir", ""))
        relative = [folder for folder in given if not os.path.isabs(os.path.expanduser(folder.strip()))]
        if relative:
            # Read from the server's working directory, which the person typing does not see.
            self.add_error("data_dir", f"Give each folder's full path, from /: {', '.join(relative)}.")
            return data
        if outside := outside_training_roots([folder.strip() for folder in given]):
            # Checked before existence: a folder outside says nothing of whether it exists.
            roots = _training_roots()
            verb = "is" if len(outside) == 1 else "are"
            outside = [f"{folder} (it leads out through a link)" if _through_a_link(folder) else folder
                       for folder in outside]
            where = (f"only on folders under {roots}: {', '.join(outside)} {verb} not" if roots
                     else "on no folder typed here: LEUKOSCOPE_TRAINING_DATA_ROOTS names none")
            self.add_error("data_dir", f"The site trains {where}. The server's administrator can add a "
                                       "folder to LEUKOSCOPE_TRAINING_DATA_ROOTS, or train on it with "
                                       "manage.py train --data.")
            return data
        missing = [folder for folder in given if not os.path.isdir(os.path.expanduser(folder.strip()))]
        if missing:
            # A typing slip would otherwise make a version that fails at once and stays listed.
            files = [folder for folder in missing if os.path.exists(os.path.expanduser(folder.strip()))]
            gone = [folder for folder in missing if folder not in files]
            self.add_error("data_dir", " ".join(filter(None, (
                gone and f"No such folder on this server: {', '.join(gone)}.",
                files and f"A file, not a folder: {', '.join(files)}."))))
            return data
        given = [folder.strip() for folder in given]
        # A folder ticked and typed too (or typed twice, with a trailing slash) is trained on once.
        folders = distinct_folders([folder.strip() for folder in
                                    [*data.get("data_sources", []), *given] or default_data_folders()])
        if data.get("task"):
            try:
                # The folders typed first: one of them that no run can learn from is what to say.
                data["data_notes"] = check_data(distinct_folders([*given, *folders]), data["task"])
            except UnusableDataFolder as refused:
                if refused.unreadable is not None:
                    # Laid out as a training data folder, its files no photographs (git-lfs pointers
                    # in place of them): the run would fail seconds after its version was stored,
                    # a configured folder's as a typed one's. Their count is not said: a typed path
                    # is told nothing of what it holds beyond what is expected.
                    reason = unreadable_reason(refused.unreadable)
                    self.add_error("data_dir" if refused.folder in given else "data_sources",
                                   f"{reason[:1].upper()}{reason[1:]}.")
                    return data
                if refused.folder in given:
                    # Refused as the run would refuse it, before a version is stored, and why: a
                    # typed folder lies under LEUKOSCOPE_TRAINING_DATA_ROOTS (checked above), where
                    # the lab keeps its data, so its reason names no server folder of another kind.
                    self.add_error("data_dir", f"{refused.folder} is not a training data folder for "
                                               f"the {data['task']} task: {refused.reason}. Expected "
                                               f"{DATA_FOLDER_EXPECTED}.")
                    return data
                # A configured folder gone since: the run says so, as it always has.
            except TooFewImages as refused:
                # Together they lack a type the task needs: the run would fail as a listed version.
                self.add_error("data_dir" if given else "data_sources", str(refused))
                return data
        data["data_dir"] = os.pathsep.join(folders)
        return data

    def add_refusal(self, refusal):
        """The training service's refusal (services.training.TrainingRefused), beside the field
        holding the setting it names, else above the form. Its data folders are the ticked and the
        typed ones together: named beside the typed ones, where any were typed."""
        field = refusal.setting
        if field == "data_dir" and not self.data.get("data_dir", "").strip():
            field = "data_sources"
        self.add_error(field if field in self.fields else None, str(refusal))


def _through_a_link(folder):
    """Whether a typed path outside the training roots reads as one under them: a link on its way
    leads out (outside_training_roots resolves links)."""
    path = os.path.abspath(os.path.expanduser(folder))
    return any(os.path.commonpath([path, os.path.abspath(root)]) == os.path.abspath(root)
               for root in settings.TRAINING_DATA_ROOTS)


class ReclassifyForm(forms.Form):
    accession_number = forms.CharField(
        required=False, max_length=64, help_text="Re-run every image of the samples with this number."
    )
    all_samples = forms.BooleanField(required=False, label="All samples")

    def clean(self):
        data = super().clean()
        if "accession_number" in self.errors:
            return data  # a number was given, and its own error says what is wrong with it
        accession = (data.get("accession_number") or "").strip()
        if accession and data.get("all_samples"):
            raise forms.ValidationError("Give an accession number or tick “All samples”, not both.")
        if not accession and not data.get("all_samples"):
            raise forms.ValidationError("Give an accession number, or tick “All samples”.")
        if accession:
            samples = list(samples_with_accession(accession))
            if not samples:
                raise forms.ValidationError(f"No sample has the accession number {accession}.")
            data["samples"] = samples
        else:
            data["samples"] = None
        return data
