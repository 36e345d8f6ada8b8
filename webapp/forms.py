"""Forms of the lab workflow: the upload of a sample, the history filters, a cell review."""

import re
from datetime import UTC, datetime

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import RegexValidator
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html

from webapp.counting import group_members, type_label
from webapp.models import ModelVersion, Sample
from webapp.selectors import (
    LABEL_STAMP_PATTERN,
    HistoryFilters,
    known_cell_types,
    samples_with_accession,
    typed_accession,
)

# No smear in this system was classified before 2000 or will be after 2100: a date outside is a typo.
PLAUSIBLE_YEARS = range(2000, 2101)


def validate_plausible_date(day):
    if day.year not in PLAUSIBLE_YEARS:
        raise forms.ValidationError(
            f"{day.isoformat()} is not a plausible date: give one between "
            f"{PLAUSIBLE_YEARS[0]} and {PLAUSIBLE_YEARS[-1]}.",
            code="implausible_date",
        )


class SignInForm(AuthenticationForm):
    """Django's sign-in form in the lab's words. "inactive" is said only to an inactive account that
    gave its right password (webapp.sign_in.InactiveAccountToldBackend): a wrong one reads the same
    for every account, and tells no one which names exist."""

    error_messages = {
        "invalid_login": "Your user name and password didn't match. Please try again.",
        "inactive": "This account is inactive: ask the lab's administrator to make it active again.",
    }

    def full_clean(self):
        super().full_clean()
        if self.errors:
            # The refusal is read with either field, where the sign-in page puts the focus again
            # (templates/registration/login.html's error paragraph).
            for name in ("username", "password"):
                self.fields[name].widget.attrs.update(
                    {"aria-invalid": "true", "aria-describedby": "sign-in-error"})


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Many files under one name; each is judged later, by content, in webapp.intake."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*", "multiple": True}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else ([data] if data else [])
        if not files:
            raise forms.ValidationError("Choose at least one smear photograph.", code="required")
        if len(files) > settings.MAX_FILES_PER_UPLOAD:
            raise forms.ValidationError(
                f"At most {settings.MAX_FILES_PER_UPLOAD} photographs per upload; split the batch.",
                code="too_many",
            )
        return list(files)

ACCESSION_MESSAGE = ("Use the letters A-Z (without accents), digits, spaces and . _ / - only, as on the "
                     "specimen label.")
ACCESSION_RULE = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9 ._/\-]*$", ACCESSION_MESSAGE)
# The same rule for the browser (an input's pattern, read with the v flag, wants / and - escaped in
# a class): a typo is caught before the photographs are sent, which a refused form would drop.
ACCESSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9 ._\/\-]*"


class AccessionField(forms.CharField):
    """An accession number as typed: held to ACCESSION_RULE in its typed_accession form, so that a
    full-width "Ｈ２６－００４５１２" from a Japanese input method is the label's H26-004512."""

    def to_python(self, value):
        return typed_accession(super().to_python(value))


def duplicate_accession_error(existing):
    """The ValidationError naming ``existing``, the sample that already holds an accession number."""
    return forms.ValidationError(
        format_html('Sample <a href="{}">{}</a> already exists: add photographs to it instead.',
                    reverse("lab:sample-detail", args=[existing.pk]), existing.accession_number),
        code="duplicate",
    )


def _refuse_duplicate_accession(accession, sample=None):
    """Raise duplicate_accession_error where another sample (than ``sample``, the one being edited)
    holds this accession number. A second sample would split one specimen's cells over two
    formulas. There is no database constraint: earlier records may hold duplicates, and those must
    stay readable; an upload checks again, holding the number (services.uploads)."""
    others = samples_with_accession(accession)
    if sample is not None and sample.pk is not None:
        others = others.exclude(pk=sample.pk)
    existing = others.order_by("created_at").first()
    if existing is not None:
        raise duplicate_accession_error(existing)


class SampleUploadForm(forms.Form):
    accession_number = AccessionField(
        max_length=64,
        label="Accession number",
        help_text="The laboratory's specimen number. Never a patient's name.",
        validators=[ACCESSION_RULE],
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "autofocus": True, "placeholder": "e.g. H26-004512",
                   "pattern": ACCESSION_PATTERN, "title": ACCESSION_MESSAGE}
        ),
    )
    note = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Optional, e.g. stain or microscope. Do not enter patient-identifying details.",
        # dir="auto": an Arabic note reads right to left as it is typed, in a left-to-right page.
        widget=forms.Textarea(attrs={"rows": 2, "dir": "auto"}),
    )
    # Not required: a form posted without it (a script written before it existed) uploads fields.
    photographs = forms.TypedChoiceField(
        label="The photographs show",
        choices=Sample.Photographs.choices,
        required=False,
        empty_value=Sample.Photographs.SMEAR_FIELDS,
        initial=Sample.Photographs.SMEAR_FIELDS,
        widget=forms.RadioSelect,
    )
    images = MultipleImageField(label="Smear photographs")

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and not data.get("photographs"):
            # Posted without the choice (a script): a refused form shows the choice it was read with.
            data = data.copy()
            data["photographs"] = Sample.Photographs.SMEAR_FIELDS
        super().__init__(data, *args, **kwargs)

    def clean_accession_number(self):
        accession = self.cleaned_data["accession_number"]
        _refuse_duplicate_accession(accession)
        return accession

    def describe_images_by(self, element_id):
        """Ties the page's list of the files not stored (``element_id``) to the photographs' input,
        after Django's own help and error texts; upload.js gives the drop zone what the input has."""
        described = self["images"].aria_describedby
        widget = self.fields["images"].widget
        widget.attrs["aria-describedby"] = " ".join(filter(None, [described, element_id]))


class SampleAdminForm(forms.ModelForm):
    """A sample's accession number and note as the Django admin edits them: held to the upload
    form's rules, so a correction cannot bring in a number the upload would refuse."""

    accession_number = AccessionField(max_length=64, label="Accession number", validators=[ACCESSION_RULE])

    class Meta:
        model = Sample
        fields = ("accession_number", "note")

    def clean_accession_number(self):
        accession = self.cleaned_data["accession_number"]
        _refuse_duplicate_accession(accession, self.instance)
        return accession


class PhotographsKindForm(forms.Form):
    """What a sample's photographs show, changed from its page (webapp.services.photographs_kind)."""

    photographs = forms.ChoiceField(choices=Sample.Photographs.choices)


class AddImagesForm(forms.Form):
    """More photographs for an existing sample, from its page."""

    images = MultipleImageField(label="Smear photographs")


def _type_choices():
    return [("", "Any type")] + [
        (name, f"{type_label(name)} (any type in the group)" if group_members(name) else type_label(name))
        for name in known_cell_types()]


def _readable_fields(form):
    """A list filter's cleaned values, without those that could not be read (the page says which)."""
    if form.is_valid():
        return form.cleaned_data
    cleaned = getattr(form, "cleaned_data", {})
    return {name: value for name, value in cleaned.items() if name not in form.errors}


class SampleListFilterForm(forms.Form):
    """The sample list's search: a piece of an accession number, and where the result stands."""

    STATUSES = {"": None, "unsigned": ("in_progress", "reopened"), "signed": ("signed",),
                "reopened": ("reopened",)}
    # Where a sample's work stands, as the home page's lists count it: each page of them, not only
    # the home page's newest ten of the last month.
    WAITING = {"to_review": "review", "to_sign": "signature"}

    q = forms.CharField(required=False, max_length=64, label="Accession number")
    status = forms.ChoiceField(required=False, label="Status", choices=[
        ("", "Any status"), ("unsigned", "Not signed"), ("to_review", "Awaiting review"),
        ("to_sign", "Waiting for a signature"), ("signed", "Signed"), ("reopened", "Reopened")])
    order = forms.ChoiceField(required=False, label="Order", choices=[
        ("", "Newest first"), ("oldest", "Oldest first")])

    def filters(self):
        """Keyword arguments for selectors.samples_with_progress, from the fields read; one that could
        not be read (an unknown status) filters nothing."""
        data = _readable_fields(self)
        status = data.get("status") or ""
        return {"accession_contains": (data.get("q") or "").strip(),
                "statuses": self.STATUSES.get(status), "waiting": self.WAITING.get(status),
                "oldest_first": data.get("order") == "oldest"}


class QueryDateTimeField(forms.DateTimeField):
    """An ISO 8601 date and time from a query string, where an offset's "+" sent unencoded arrives
    as a space: a program that copies a result's signed_at ("...T08:28:24+00:00") into the URL as
    it is means "+00:00", and no date-time has a space before its last HH:MM otherwise."""

    default_error_messages = {"invalid": "Enter a valid date/time, ISO 8601: 2026-12-05T06:00:00Z."}

    def to_python(self, value):
        if isinstance(value, str):
            value = re.sub(r"(T[\d:.,]+) (\d{2}:?\d{2})$", r"\1+\2", value.strip())
            if (moment := _local_moment_at_a_clock_change(value)) is not None:
                return moment
        return super().to_python(value)


def _local_moment_at_a_clock_change(text):
    """For an ISO 8601 time without an offset that the site's clocks read twice (the hour they go
    back) or never (the hour they skip), the earlier of the two moments it can mean; None for any
    other text. Django refuses such a time as ambiguous; read as "since", the earlier moment
    misses nothing (a result at the later one is listed too), where a refusal stopped an
    information system polling in the site's zone twice a year."""
    try:
        # A date alone too (parse_datetime reads it as its midnight, as Django's field does): where the
        # clocks change at midnight (Chile, Cuba, the Azores), that midnight is skipped or read twice.
        parsed = parse_datetime(text)
    except ValueError:
        return None  # well formed, but no calendar's (a 30th of February): Django's parsing refuses it
    if parsed is None or not timezone.is_naive(parsed):
        return None
    zone = timezone.get_current_timezone()
    readings = [parsed.replace(tzinfo=zone, fold=fold) for fold in (0, 1)]
    if readings[0].utcoffset() == readings[1].utcoffset():
        return None  # one moment, as Django reads it
    return min(readings, key=lambda reading: reading.astimezone(UTC))


class ApiSampleListFilterForm(SampleListFilterForm):
    """The API's sample list: the page's filters, and what a laboratory information system polls
    with, the results signed since its last look."""

    signed_since = QueryDateTimeField(
        required=False, help_text="ISO 8601, e.g. 2026-12-05T06:00:00Z; without an offset, the "
                                  "site's time zone (LEUKOSCOPE_TIME_ZONE, UTC by default).")

    after = forms.IntegerField(
        required=False, min_value=1,
        help_text="With signed_since: the id of the result the last page ended with (each answer's "
                  "next sets it), so that the next page starts after that one.")

    def clean_signed_since(self):
        since = self.cleaned_data["signed_since"]
        if since is None:
            return since
        try:
            return since.astimezone(UTC)
        except OverflowError:
            # Past what a date holds once in UTC (year 1 east of it, 9999 west): the earliest or the
            # latest moment, as the program meant ("everything since the start").
            return datetime.min.replace(tzinfo=UTC) if since.year == 1 else datetime.max.replace(tzinfo=UTC)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("signed_since") and cleaned.get("status") not in ("", None, "signed"):
            self.add_error("signed_since",
                           "It lists signed results: leave status out, or give status=signed.")
        if cleaned.get("after") and not cleaned.get("signed_since") and "signed_since" not in self.errors:
            self.add_error("after", "It goes with signed_since: the result signed then that the last "
                                    "page ended with.")
        return cleaned

    def filters(self):
        filters = super().filters()
        valid = self.is_valid()
        return {**filters, "signed_since": self.cleaned_data.get("signed_since") if valid else None,
                "signed_after": self.cleaned_data.get("after") if valid else None}


# Dates are read as ISO 8601 alone (formats.en.DATE_INPUT_FORMATS): the message says how to write one.
ISO_DATE = {"invalid": "Enter a date as YYYY-MM-DD (ISO 8601)."}


class HistoryFilterForm(forms.Form):
    YES_NO = [("", "Any"), ("yes", "Yes"), ("no", "No")]

    cell_type = forms.ChoiceField(required=False, label="Type")
    confidence_min = forms.IntegerField(required=False, min_value=0, max_value=100, label="Confidence from %")
    confidence_max = forms.IntegerField(required=False, min_value=0, max_value=100, label="to %")
    reviewed = forms.ChoiceField(required=False, choices=YES_NO)
    needs_review = forms.ChoiceField(required=False, choices=YES_NO, label="Flagged for review")
    accession = forms.CharField(required=False, max_length=64, label="Accession number")
    date_from = forms.DateField(required=False, label="From", validators=[validate_plausible_date],
                                error_messages=ISO_DATE, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", validators=[validate_plausible_date],
                              error_messages=ISO_DATE, widget=forms.DateInput(attrs={"type": "date"}))
    model_version = forms.ModelChoiceField(
        required=False,
        queryset=ModelVersion.objects.only("id", "architecture", "task", "status"),
        empty_label="Any version",
        label="Model version",
    )
    calls = forms.ChoiceField(
        required=False,
        # Superseded: a later version re-classified the photograph and the formula counts its call.
        choices=[("", "Current ones"), ("all", "Superseded too")],
        label="Calls",
    )
    found = forms.ChoiceField(
        required=False,
        # How each cell came to be: the detector's outline, a reviewer's box, or, on a photograph of
        # one cell where the detector outlined none, the photograph's middle (always reviewed).
        choices=[("", "Any way"), ("detector", "Outlined by the detector"), ("hand", "Drawn by hand"),
                 ("middle", "Middle of a one-cell photograph")],
        label="Found",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cell_type"].choices = _type_choices()

    def clean(self):
        data = super().clean()
        low, high = data.get("confidence_min"), data.get("confidence_max")
        if low is not None and high is not None and low > high:
            self.add_error("confidence_max", "The upper bound is below the lower one.")
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def filters(self):
        """HistoryFilters from the valid fields; an invalid form filters on nothing it got wrong."""
        data = _readable_fields(self)
        version = data.get("model_version")
        low, high = data.get("confidence_min"), data.get("confidence_max")
        return HistoryFilters(
            cell_type=data.get("cell_type") or "",
            confidence_min=low / 100 if low is not None else None,
            confidence_max=high / 100 if high is not None else None,
            reviewed=data.get("reviewed") or "",
            needs_review=data.get("needs_review") or "",
            accession=data.get("accession") or "",
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            model_version=version.pk if version else None,
            calls=data.get("calls") or "",
            found=data.get("found") or "",
        )


# No type's name is longer than the stored field; a longer one is no type at all.
CELL_TYPE_ERRORS = {"required": "Choose a cell type.", "max_length": "That is not one of this model's types."}


UNREADABLE_SEEN = ("The page sent the cells' labels as it showed them in a form this site cannot read: "
                   "reload the page.")


def read_label_stamp(text):
    """A selectors.label_stamp as a page sent it, or ValidationError."""
    if not LABEL_STAMP_PATTERN.fullmatch(text):
        raise forms.ValidationError(UNREADABLE_SEEN)
    return text


class ReviewForm(forms.Form):
    """A cell's relabelling: the type, and ``seen``, the label_stamp of the label the page showed
    (optional: a request without it relabels whatever the cell holds now)."""

    cell_type = forms.CharField(max_length=32, error_messages=CELL_TYPE_ERRORS)
    seen = forms.CharField(required=False, strip=True)

    def clean_seen(self):
        return read_label_stamp(self.cleaned_data["seen"]) if self.cleaned_data["seen"] else None


# At most this many cells in one gallery relabelling: a sample's worth, not the whole history.
MAX_CELLS_PER_REVIEW = 2000
# The largest primary key SQLite and PostgreSQL's bigint hold.
MAX_CELL_ID = 2**63 - 1


def is_row_id(text):
    """Whether ``text``, as a request sent it, can name a row: ASCII digits (isdigit() alone takes
    "²", which int() refuses) of a number the databases' keys hold (int() refuses thousands of
    digits outright, and the database a number past its largest key)."""
    digits = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_CELL_ID))
    return digits and int(text) <= MAX_CELL_ID


class GalleryReviewForm(forms.Form):
    """The gallery's relabelling of a selection: cell ids (repeated `cells`, or comma-separated),
    the type they are given and, optionally, `seen`: "id:label_stamp" per cell, comma-separated,
    the labels as the page showed them (services.review.review_cells)."""

    cells = forms.CharField(error_messages={"required": "Select at least one cell to relabel."})
    cell_type = forms.CharField(max_length=32, error_messages=CELL_TYPE_ERRORS)
    seen = forms.CharField(required=False)

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and hasattr(data, "getlist"):
            data = data.copy()
            data["cells"] = ",".join(data.getlist("cells"))
        super().__init__(data, *args, **kwargs)

    def clean_cells(self):
        parts = [part.strip() for part in self.cleaned_data["cells"].split(",") if part.strip()]
        # isdigit() alone would take "²", which int() refuses.
        if not parts or not all(part.isascii() and part.isdigit() for part in parts):
            raise forms.ValidationError("The selection should be a list of cell numbers.")
        if len(parts) > MAX_CELLS_PER_REVIEW:
            raise forms.ValidationError(
                f"{len(parts)} cells selected: relabel at most {MAX_CELLS_PER_REVIEW} at a time.")
        # A number past the database's largest key is no cell; the database would refuse the query.
        beyond = [part for part in parts if not is_row_id(part)]
        if beyond:
            shown = beyond[0] if len(beyond[0]) <= 40 else f"{beyond[0][:40]}…"
            raise forms.ValidationError(f"There is no cell {shown}: select cells on this page.")
        return sorted({int(part) for part in parts})

    def clean_seen(self):
        seen = {}
        for part in self.cleaned_data["seen"].split(","):
            if not part.strip():
                continue
            pk, _, stamp = part.strip().partition(":")
            if not is_row_id(pk):
                raise forms.ValidationError(UNREADABLE_SEEN)
            seen[int(pk)] = read_label_stamp(stamp)
        return seen or None
