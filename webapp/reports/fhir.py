"""A signed sample's result as FHIR for a laboratory information system.

A Bundle of type "collection": the DiagnosticReport first, then one Observation per reported
figure (each differential percentage, each count per 100 leukocytes), which the report lists in
`result`. Built with fhir.resources' R4B models (FHIR 4.3: the package's default models are R5 and
it has no 4.0.1 set; DiagnosticReport, Observation and Bundle read the same in R4 and R4B for
every element used here), so each resource is validated as it is built.

The figures come from webapp.presenters.report's view model, as the page and the PDF do. Ids are
derived from the sample, its signature count and the figure, so fetching the same signed result
twice gives the same resources and an amended result new ones.
"""

import uuid

from django.conf import settings
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from webapp.presenters.report import PERCENT
from webapp.reports import loinc
from webapp.wording import count_of

CONTENT_TYPE = "application/fhir+json"
# The versions an Accept header's fhirVersion may name (FHIR's mime-type parameter): R4 and R4B,
# which read alike for every element the bundle holds.
FHIR_VERSIONS = ("4.0", "4.3")
_NAMESPACE = uuid.UUID("6c9f5d3e-1b8e-4b7a-9a55-4c1b8f0d2a71")  # Leukoscope's, for uuid5 ids
_CATEGORY = {"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "laboratory", "display": "Laboratory"}]}
_REPORT_CATEGORY = {"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM", "display": "Hematology"}]}
_ACCESSION_TYPE = {"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN",
    "display": "Accession ID"}], "text": "Accession number"}
# What a signature says of the review: every call the network was unsure of was reviewed, the
# others where a person chose to (the conclusion says how many were, and which types people alone
# name). "Reviewed by laboratory staff" alone read as every cell looked at.
_REVIEW = ("cells pre-classified by a neural network, every call it was unsure of reviewed by laboratory "
           "staff before the result was signed")
METHOD_TEXT = f"Digital morphology of a blood smear: {_REVIEW}"
# Where the cells came from photographs of one cell each (an analyser's cell pictures), not fields.
ONE_CELL_METHOD_TEXT = ("Digital morphology of a blood smear, from photographs of one white cell each: "
                        f"{_REVIEW}")


class NotFinal(Exception):
    """The sample is not signed: there is no final result to send."""


def _present(fields):
    """The fields that have a value: FHIR allows neither empty strings nor empty lists."""
    return {name: value for name, value in fields.items() if value not in (None, "", [])}


def _urn(report, key):
    """A stable id: the same signature of the same sample gives the same one; a database that
    reuses a deleted sample's number does not (its accession number or signing time differ)."""
    name = f"{report.sample.pk}/{report.accession}/{report.signed_at.isoformat()}/{key}"
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, name)}"


def _code(figure):
    entry = loinc.code_for(figure.name, figure.kind)
    text = (f"{figure.label} (% of leukocytes)" if figure.kind == PERCENT
            else f"{figure.label} per 100 leukocytes")
    if entry is None:
        return {"text": text}  # a type without a LOINC code: a text code only
    return {"coding": [{"system": loinc.SYSTEM, "code": entry.code, "display": entry.display}],
            "text": text}


def _quantity(figure):
    unit = loinc.PERCENT_UNIT if figure.kind == PERCENT else loinc.PER_100_UNIT
    return {"value": figure.value, "unit": unit, "system": loinc.UCUM, "code": unit}


# A figure with no value: a result an older release signed with no leukocyte counted (this one never
# signs such a sample) still reports its erythroblasts per 100 leukocytes, a share of nothing. A
# quantity without a number reads to an LIS as a number lost on the way; FHIR says it is absent, and why.
_NO_LEUKOCYTE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                             "code": "not-applicable", "display": "Not Applicable"}],
                 "text": "no leukocyte counted: no figure per 100 leukocytes"}


def _observation(report, figure, status, performer, issued, effective):
    total = report.formula.total
    if figure.kind == PERCENT:
        note = (f"{figure.count} of {total} leukocytes counted; 95% range "
                f"{figure.low}-{figure.high} % (exact binomial, Clopper-Pearson)")
    else:
        note = f"{figure.count} counted beside {total} leukocytes"
    return Observation.model_validate(_present({
        "resourceType": "Observation",
        "status": status,
        "category": [_CATEGORY],
        "code": _code(figure),
        "effectiveDateTime": effective,
        "issued": issued,
        "performer": performer,
        "valueQuantity": _quantity(figure) if figure.value is not None else None,
        "dataAbsentReason": _NO_LEUKOCYTE if figure.value is None else None,
        "method": {"text": ONE_CELL_METHOD_TEXT if report.sample.one_cell_each else METHOD_TEXT},
        "note": [{"text": note}],
    }))


def _sentence(words):
    """The hematologist's words ending as a sentence, so that the next one does not run on."""
    words = words.strip()
    return words if words.endswith((".", "!", "?")) else f"{words}."


def _conclusion(report):
    lines = []
    if report.amended_because:
        reopened = report.reopened_at.isoformat(timespec="minutes") if report.reopened_at else "unknown"
        lines.append(f"Amended after reopening by {report.reopened_by or 'unknown'} on {reopened}: "
                     f"{_sentence(report.amended_because)}")
    if report.changes_line:
        lines.append(report.changes_line)
    lines += report.warnings
    if report.below_target_reason:
        lines.append(f"Signed below the target count of {report.target_count}: "
                     f"{_sentence(report.below_target_reason)}")
    if report.listed_apart:
        lines.append("Listed apart, not counted: "
                     + ", ".join(f"{label} {count}" for label, count in report.listed_apart) + ".")
    if report.partial_left_out:
        lines.append(f"{count_of(report.partial_left_out, 'cell')} cut by a photograph's edge left out.")
    versions = ", ".join(v.words for v in report.versions)
    if versions:
        lines.append(f"Classified by {versions}.")
    return " ".join(lines)


def diagnostic_bundle(report):
    """The report's Bundle (fhir.resources model); NotFinal for an unsigned sample."""
    if not report.signed or report.signed_at is None:
        raise NotFinal(f"Sample {report.accession} is not signed: only a signed result is sent to "
                       "the laboratory information system.")
    status = report.result.value
    issued = report.signed_at.isoformat()
    # Leukoscope does not know when the blood was drawn; the nearest time it knows is when the
    # photographs were received, which an amendment, unlike a signature, leaves where it was.
    effective = report.sample.created_at.isoformat()
    performer = [{"display": report.signed_by}] if report.signed_by else []
    observations = [
        (_urn(report, f"{figure.kind}/{figure.name}"),
         _observation(report, figure, status, performer, issued, effective))
        for figure in report.figures
    ]
    diagnostic = DiagnosticReport.model_validate(_present({
        "resourceType": "DiagnosticReport",
        "identifier": [_present({"type": _ACCESSION_TYPE, "system": settings.ACCESSION_SYSTEM,
                                 "value": report.accession})],
        "status": status,
        "category": [_REPORT_CATEGORY],
        "code": {"coding": [{"system": loinc.SYSTEM, "code": loinc.PANEL.code,
                             "display": loinc.PANEL.display}],
                 "text": "Leukocyte differential (digital morphology)"},
        "effectiveDateTime": effective,
        "issued": issued,
        "performer": performer,
        "resultsInterpreter": performer,
        "result": [{"reference": urn} for urn, _ in observations],
        "conclusion": _conclusion(report),
    }))
    entries = [{"fullUrl": _urn(report, "report"), "resource": diagnostic}]
    entries += [{"fullUrl": urn, "resource": observation} for urn, observation in observations]
    return Bundle.model_validate({
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": _urn(report, "bundle")},
        "type": "collection",
        "timestamp": issued,
        "entry": entries,
    })


def bundle_json(report):
    """The Bundle as FHIR JSON text."""
    return diagnostic_bundle(report).model_dump_json(exclude_none=True)
