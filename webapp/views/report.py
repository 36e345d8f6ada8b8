"""A sample's report: the printable page, its PDF, and the FHIR export for a laboratory information
system. Thin: the view model is webapp.presenters.report's, drawn by a template, by
webapp.reports.pdf or by webapp.reports.fhir."""

from django.http import HttpResponse, JsonResponse
from django.http.request import MediaType
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from webapp.models import Sample
from webapp.presenters.report import sample_report
from webapp.reports.fhir import CONTENT_TYPE, FHIR_VERSIONS, NotFinal, bundle_json
from webapp.reports.pdf import render_pdf
from webapp.views.api import read_only


def _report(pk):
    sample = get_object_or_404(Sample.objects.select_related("signed_by", "reopened_by"), pk=pk)
    return sample_report(sample)


def report_file_name(accession):
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in accession)
    return f"{safe or 'sample'}-report.pdf"


@require_GET
def report_page(request, pk):
    return render(request, "lab/report.html", _report(pk).as_context())


@require_GET
def report_pdf(request, pk):
    report = _report(pk)
    response = HttpResponse(render_pdf(report), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{report_file_name(report.accession)}"'
    return response


def _accepts_fhir_json(request):
    """Whether the Accept header admits the JSON sample_fhir writes, whatever parameters ride along
    (a charset, FHIR's fhirVersion where it names a version the bundle is): Django's own matching
    refuses "application/fhir+json; fhirVersion=4.0" for a type offered without parameters. An
    Accept header left empty names no type: read as none sent, as HTTP clients mean it."""
    if not request.headers.get("Accept", "").strip():
        return True
    for accepted in request.accepted_types:  # those refused with q=0 already left out
        if accepted.params.get("fhirversion", FHIR_VERSIONS[0]) not in FHIR_VERSIONS:
            continue
        bare = MediaType(f"{accepted.main_type}/{accepted.sub_type}")
        if bare.match(CONTENT_TYPE) or bare.match("application/json"):
            return True
    return False


@read_only
def sample_fhir(request, pk):
    if not _accepts_fhir_json(request):
        # Asked for FHIR's XML (or anything else) only: say what there is, not JSON with a 200.
        return JsonResponse({"error": f"Only {CONTENT_TYPE} (FHIR R4, fhirVersion "
                                      f"{' or '.join(FHIR_VERSIONS)}) is served here."}, status=406)
    report = _report(pk)
    try:
        body = bundle_json(report)
    except NotFinal as refusal:
        return JsonResponse({"error": str(refusal)}, status=409)
    return HttpResponse(body, content_type=CONTENT_TYPE)
