"""Forms of the staff-only model pages: retraining and re-classification."""

from django import forms
from django.conf import settings

from webapp.models import ModelVersion
from webapp.selectors import samples_with_accession
from webapp.services.training import architecture_names, default_epochs, held_out_runs

MAX_EPOCHS = 200


class RetrainForm(forms.Form):
    architecture = forms.ChoiceField()
    task = forms.ChoiceField(choices=ModelVersion.Task.choices)
    epochs = forms.IntegerField(min_value=1, max_value=MAX_EPOCHS)
    include_reviewed = forms.BooleanField(
        required=False,
        label="Include reviewed cells",
        help_text="Add every cell a technologist relabelled, with its corrected type.",
    )
    data_dir = forms.CharField(
        required=False,
        max_length=1024,
        label="Training data folder",
        help_text="TRAIN/CLASS/*.jpeg (with TEST/ for held-out figures) or CLASS/*.jpeg on the "
        "training machine. Empty: the configured default.",
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
        refit = self.fields["refit_from"]
        refit.queryset = held_out_runs()
        refit.label_from_instance = lambda version: (
            f"v{version.pk}: {version.architecture} / {version.task}, "
            f"{version.hyperparameters.get('epochs')} epochs, temperature {version.temperature:.3f}"
        )
        names = architecture_names()
        self.fields["architecture"].choices = [(name, name) for name in names]
        active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).only("task", "architecture")
        active = active.first()
        if active and active.architecture in names:
            architecture = active.architecture
        else:
            architecture = "leukonet" if "leukonet" in names else names[0]
        self.initial.setdefault("architecture", architecture)
        self.initial.setdefault("task", active.task if active else ModelVersion.Task.FOUR_CLASS)
        self.initial.setdefault("epochs", default_epochs(architecture))
        self.fields["data_dir"].widget.attrs["placeholder"] = str(settings.TRAINING_DATA_DIR)

    def clean_data_dir(self):
        # Whether the folder holds usable images is the training run's to judge: it fails the version
        # with the reason, which the page then shows beside it.
        return self.cleaned_data["data_dir"].strip() or str(settings.TRAINING_DATA_DIR)


class ReclassifyForm(forms.Form):
    accession_number = forms.CharField(
        required=False, max_length=64, help_text="Re-run every image of the samples with this number."
    )
    all_samples = forms.BooleanField(required=False, label="All samples")

    def clean(self):
        data = super().clean()
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
