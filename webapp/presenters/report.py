"""A sample's report as one view model: the printable page, the PDF (webapp.reports.pdf) and the
FHIR export's figures (webapp.reports.fhir) are all drawn from it, so the three never disagree.

What it holds: who signed and when (or that nobody has: a preliminary report), the differential
with each share's 95% range, the mononuclear / polynuclear table, the per-100-leukocytes figures
(NRBC), what was left out of the count and why, every warning a reader of the figures should see,
a few crops of each type, and the networks that made the calls.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.template.defaultfilters import pluralize
from django.utils import timezone

from webapp.cell_types import review_types, type_order
from webapp.counting import RULES, Counting, rule_for, type_label
from webapp.models import Sample
from webapp.presenters import ViewModel
from webapp.selectors import (
    LeukocyteFormula,
    class_names_by_version,
    familiarity,
    figure_changes,
    leukocyte_formula,
    model_versions,
    mostly_unfamiliar,
    result_figures,
    sample_images_with_cells,
    unfamiliar_unreviewed,
)
from webapp.wording import count_of, person

# Crops shown per type in the report's gallery.
GALLERY_CROPS = 4

PERCENT = "percent"
PER_100 = "per_100"


@dataclass(frozen=True)
class Figure:
    """One reported number: a type's share of the differential, in percent, or its count per 100
    leukocytes (NRBC); the FHIR export sends one Observation per Figure."""

    name: str  # the cell type (webapp.counting)
    label: str  # as the report prints it
    kind: str  # PERCENT or PER_100
    value: float
    count: int
    low: float | None = None  # 95% range of a percentage (exact binomial); None for per-100 figures
    high: float | None = None


@dataclass(frozen=True)
class GalleryType:
    name: str
    label: str
    count: int  # cells of this type on the sample (the gallery shows a few)
    crops: list  # Cell, with a stored crop

    @property
    def caption(self):
        """The row's label: Neutrophil (3), or Neutrophil (4 of 57 shown) where it shows fewer cells
        than were counted."""
        shown = len(self.crops)
        if shown >= self.count:
            return f"{self.label} ({self.count})"
        return f"{self.label} ({shown} of {self.count} shown)"


@dataclass(frozen=True)
class VersionLine:
    label: str  # v12
    architecture: str
    task: str  # as said mid-sentence: "eight cell types"
    network: str = ""  # the start of its stored network's SHA-256: "v12" is this installation's alone

    @property
    def words(self):
        """As a report names it: "v12 (leukonet-gn, eight cell types, network 3f2a9c01d4e5)"."""
        network = f", network {self.network}" if self.network else ""
        return f"{self.label} ({self.architecture}, {self.task}{network})"


@dataclass
class SampleReport(ViewModel):
    sample: Sample
    accession: str
    note: str  # what the technologist wrote with the sample (stain, microscope, clinical remark)
    # How the photographs were read where it is not as fields of a smear ("" for those).
    photographs_note: str
    signed: bool
    signed_by: str  # display name of the signing hematologist; "" when not signed
    signed_at: datetime | None
    result: Sample.Result  # preliminary, final or amended
    amended: bool  # signed again after a reopening
    times_signed: int
    reopened: bool  # reopened since its last signature, not signed again yet
    reopened_by: str
    reopened_at: datetime | None
    reopen_reason: str
    # An amended result: why, and who reopened it when (the reopening that led to this signature).
    amended_because: str
    # What an amended (or reopened) result changed from the one signed before, as one sentence:
    # "Changed from the result signed before: Blast 3.7% → 0.0%." ("" for any other result).
    changes_line: str
    formula: LeukocyteFormula
    differential: list  # Figure (PERCENT), in the report's type order
    groups: list  # selectors.FormulaRow: MONONUCLEAR / POLYNUCLEAR, when types were named
    per_100: list  # Figure (PER_100)
    listed_apart: list  # (label, count): platelets, artefacts
    unidentified: int
    unidentified_kept: bool
    partial_left_out: int
    target_count: int
    below_target: bool
    below_target_reason: str
    warnings: list  # sentences for the reader of the figures
    gallery: list  # GalleryType
    versions: list  # VersionLine
    generated_at: datetime = field(default_factory=timezone.now)

    @property
    def figures(self):
        """Every reported number, as the FHIR export sends them."""
        return self.differential + self.per_100


def _figure_name(name):
    return rule_for(name).reported_as or type_label(name)


def _figure_words(value, unit, figures, name):
    """A figure as a change names it; None: the type was not reported in ``figures`` (the
    result_figures it comes from), or it was with no leukocyte counted, so no share."""
    if value is None:
        return "no leukocyte counted" if name in (figures or {}).get("types", {}) else "not reported"
    return f"{value:.1f}%" if unit == "percent" else f"{value:.1f}/100 WBC"


def _changes_in_words(before, after):
    """(figure's name, before, after) in words for each figure two result_figures report apart."""
    return [(_figure_name(name), _figure_words(was, unit, before, name),
             _figure_words(now, unit, after, name)) for name, was, now, unit in figure_changes(before, after)]


def _changed_since_signed(sample, formula):
    """A signed result is read from its cells each time it is shown; a signed sample's cells cannot
    change, so figures that differ from the copy its signature kept mean the site's counting did
    (an upgrade): said, with what moved, rather than shown as what was signed."""
    if not (sample.is_signed and sample.signed_figures):
        return ""
    changes = _changes_in_words(sample.signed_figures, result_figures(formula))
    if not changes:
        return ""
    moved = "; ".join(f"{name} signed as {was}, now {now}" for name, was, now in changes)
    return (f"These figures differ from those signed ({moved}): the site now counts this sample otherwise "
            "than when it was signed. Reopen and sign it again to sign what it shows now.")


def changes_line(sample, formula):
    """What changed from the result a reopening set aside, as the page, the PDF and the FHIR
    conclusion say it: against the amended signature's figures, or, while the sample is reopened,
    against today's ("Blast 3.7% → 0.0%", in type order)."""
    before = sample.previously_signed_figures
    amended = sample.result == Sample.Result.AMENDED
    if not before or not (amended or sample.status == Sample.Status.REOPENED):
        return ""
    after = sample.signed_figures if amended and sample.signed_figures else result_figures(formula)
    changes = [f"{name} {was} \u2192 {now}" for name, was, now in _changes_in_words(before, after)]
    if amended:
        return (f"Changed from the result signed before: {'; '.join(changes)}." if changes
                else "No reported figure changed from the result signed before.")
    return f"Changed since the signed result: {'; '.join(changes)}." if changes else ""




def _warnings(sample, formula, photographs, version_lines):
    warnings = []
    if drifted := _changed_since_signed(sample, formula):
        warnings.append(drifted)
    if not formula.total:
        warnings.append("No leukocyte is counted: there is no differential, and no figure per 100 "
                        "leukocytes.")
    elif formula.total < sample.target_count:
        line = (f"{count_of(formula.total, 'leukocyte')} counted, below the target of "
                f"{sample.target_count}: the percentages are less precise (see each 95% range).")
        warnings.append(line)
    if formula.mixed_versions:
        names = ", ".join(line.label for line in version_lines)
        warnings.append(f"The photographs were classified by different networks ({names}): one "
                        "differential should come from one network.")
    if formula.mostly_unfamiliar:
        warnings.append(f"{formula.unfamiliar_cells} of the {formula.scored_cells} cells found in the "
                        "sample are unlike those the network was trained on (another stain, camera or "
                        "lab?): check its calls by eye.")
    if formula.unscored_cells:
        n = formula.unscored_cells
        warnings.append(
            f"{count_of(n, 'cell')} {pluralize(n, 'was,were')} classified by a network without an "
            "unfamiliarity score: a cell of a type it was never taught, or from a stain or camera it "
            "does not know, is called as one of its own types, often confidently, and nothing flags "
            "it. Check those calls by eye.")
    if formula.total:
        warnings += _found_by_people_alone(formula, photographs)
    if formula.awaiting_review:
        n = formula.awaiting_review
        warnings.append(f"{count_of(n, 'uncertain call')} {pluralize(n, 'was,were')} not reviewed.")
    if formula.unidentified:
        kept = " (kept as unidentified by the signing hematologist)" if sample.unidentified_kept else ""
        n = formula.unidentified
        warnings.append(f"{count_of(n, 'cell')} could not be identified{kept}; "
                        f"{pluralize(n, 'it is,they are')} not counted.")
    for entry in photographs:
        image = entry.image
        if image.status != image.Status.DONE:
            state = "failed" if image.status == image.Status.FAILED else "is not classified yet"
            warnings.append(f"Photograph {image.original_filename} {state}"
                            f"{': ' + image.error if image.error else ''}.")
        for warning in image.quality_warnings or []:
            warnings.append(f"Photograph {image.original_filename}: {warning}")
        unusual, scored = familiarity(entry.cells)
        if mostly_unfamiliar(unusual, scored):
            # Once a person has labelled every one of them, "check by eye" is done: the report says so.
            advice = ("check its calls by eye." if unfamiliar_unreviewed(entry.cells)
                      else "a person reviewed each of them.")
            warnings.append(
                f"Photograph {image.original_filename}: {unusual} of the {scored} cells found on it "
                f"are unlike those the network was trained on (another stain or camera?): {advice}")
    return warnings


def _found_by_people_alone(formula, photographs):
    """The reported types no network of the sample calls (a blast): the network calls such a cell one
    of its own types, often confidently and unflagged, so their absence from the figures is no
    evidence of none. Said with how many of the cells a person looked at."""
    networks = class_names_by_version(formula.model_versions).values()
    called = {name for names in networks for name in names}
    # Only the types a reviewer of these networks may give: a binary network's reviewer gives no
    # reactive lymphocyte (webapp.cell_types.review_types), which it counts as mononuclear.
    given = {name for names in networks for name in review_types(names)}
    unseen = [rule.label + "s" for name, rule in RULES.items()
              if rule.reviewer_only and name not in called and name in given
              and rule.counting in (Counting.DIFFERENTIAL, Counting.PER_100_LEUKOCYTES)]
    if not unseen:
        return []
    cells = sum(len(entry.cells) for entry in photographs)
    names = unseen[0] if len(unseen) == 1 else ", ".join(unseen[:-1]) + " and " + unseen[-1].lower()
    names = names[:1].upper() + names[1:].lower()
    return [f"{names} {'is' if len(unseen) == 1 else 'are'} not called by the network: "
            f"{'it is' if len(unseen) == 1 else 'they are'} counted only where a person relabelled a "
            f"cell; a person reviewed {formula.reviewed} of the {count_of(cells, 'cell')}."]


def _gallery(photographs):
    by_type = {}
    for entry in photographs:
        for cell in entry.cells:
            if cell.is_partial and not cell.count_partial:
                continue
            by_type.setdefault(cell.cell_type, []).append(cell)
    return [
        GalleryType(name, type_label(name), len(cells), [cell for cell in cells if cell.crop][:GALLERY_CROPS])
        for name, cells in sorted(by_type.items(), key=lambda item: type_order(item[0]))
    ]


def sample_report(sample):
    """The report of a sample loaded with its signer and reopener (select_related)."""
    formula = leukocyte_formula(sample)
    photographs = sample_images_with_cells(sample)
    versions = [
        VersionLine(version.label, version.architecture, version.get_task_display().lower(),
                    (version.model_sha256 or "")[:12])
        for version in model_versions().filter(pk__in=formula.model_versions).order_by("pk")
    ]
    # No leukocyte counted: no table of shares (each would be a share of nothing).
    differential = [Figure(row.name, type_label(row.name), PERCENT, row.percent, row.count, row.low, row.high)
                    for row in formula.rows] if formula.total else []
    per_100 = [Figure(row.name, row.reported_as or type_label(row.name), PER_100, row.per_100, row.count)
               for row in formula.per_100]
    signed = sample.status == Sample.Status.SIGNED
    return SampleReport(
        sample=sample,
        accession=sample.accession_number,
        note=sample.note.strip(),
        photographs_note=("Counted from photographs of one white cell each: each photograph gives the "
                          "cell in its middle." if sample.one_cell_each else ""),
        signed=signed,
        signed_by=(sample.signed_by_name or person(sample.signed_by)) if signed else "",
        signed_at=sample.signed_at if signed else None,
        result=sample.result,
        amended=sample.result == Sample.Result.AMENDED,
        times_signed=sample.times_signed,
        reopened=sample.status == Sample.Status.REOPENED,
        reopened_by=sample.reopened_by_name or person(sample.reopened_by),
        reopened_at=sample.reopened_at,
        reopen_reason=sample.reopen_reason,
        amended_because=sample.amended_because,
        changes_line=changes_line(sample, formula),
        formula=formula,
        differential=differential,
        groups=formula.groups if formula.total else [],
        per_100=per_100,
        listed_apart=[(type_label(name), count) for name, count in formula.listed_apart],
        unidentified=formula.unidentified,
        # What a signature said belongs to it: a reopened result is no longer signed below target.
        unidentified_kept=sample.unidentified_kept and sample.is_signed,
        partial_left_out=formula.partial_left_out,
        target_count=sample.target_count,
        below_target=formula.total < sample.target_count,
        below_target_reason=sample.below_target_reason if sample.is_signed else "",
        warnings=_warnings(sample, formula, photographs, versions),
        gallery=_gallery(photographs),
        versions=versions,
    )

