"""Forms of the sign-off panel on the sample page: sign, reopen, target count."""

from django import forms

from webapp.selectors import RESULT_STAMP_PATTERN
from webapp.services.sign_off import TARGET_CHOICES

NOT_OUR_STAMP = ("Reload the page and sign again: the form's record of the result you were shown is not one "
                 "this site wrote.")


class SignForm(forms.Form):
    below_target_reason = forms.CharField(
        required=False, max_length=2000, label="Reason for signing below the target count",
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"max_length": "The reason for signing below the target count is at most 2,000 "
                                      "characters."},
    )
    keep_unidentified = forms.BooleanField(
        required=False, label="Keep the unidentified cells as unidentified (listed apart on the report)"
    )
    # The result the page showed (selectors.result_stamp): the service refuses to sign another one.
    result_seen = forms.CharField(
        max_length=4000, widget=forms.HiddenInput,
        error_messages={"required": "Reload the page and sign again: the form did not say which result "
                                    "you were shown.",
                        "max_length": NOT_OUR_STAMP},
    )

    def clean_result_seen(self):
        # A stamp the site did not write would otherwise be read as a result that changed since.
        stamp = self.cleaned_data["result_seen"]
        if not RESULT_STAMP_PATTERN.fullmatch(stamp):
            raise forms.ValidationError(NOT_OUR_STAMP)
        return stamp


class ReopenForm(forms.Form):
    reason = forms.CharField(
        max_length=2000, label="Reason for reopening", widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Give the reason for reopening the sample.",
                        "max_length": "The reason for reopening is at most 2,000 characters."},
    )


class TargetCountForm(forms.Form):
    target_count = forms.TypedChoiceField(
        choices=[(n, f"{n} leukocytes") for n in TARGET_CHOICES], coerce=int, label="Target count",
        error_messages={"invalid_choice": "The target count is 100 or 200 leukocytes.",
                        "required": "Choose the target count: 100 or 200 leukocytes."},
    )
