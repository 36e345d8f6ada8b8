"""A form from a sample's page sent for a sample or photograph deleted since the page was drawn.

The services refuse a change whose sample a deletion takes while they wait on its row lock
(locking.DeletedMeanwhile: "Sample H26-0001 was deleted meanwhile: nothing was stored."). A form
that arrives once the deletion has committed meets the same race a moment sooner, and must read the
same, not as the site's "page not found": the views look what they were sent for up here, which
reads what is gone from its deletion's audit row. An id the trail never saw deleted is still a 404.

Whoever may not do what the form asks is refused (403) before the view asks here: a deleted
sample's accession number is told only to those who could have made the change.
"""

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect

from webapp.forms import is_row_id
from webapp.models import Cell, Sample, SmearImage
from webapp.presenters.lab import sample_page_address
from webapp.selectors import deleted_photograph, deleted_sample_accession
from webapp.services.locking import DeletedMeanwhile
from webapp.views.errors import wants_json
from webapp.wording import isolated


class PhotographGone(DeletedMeanwhile):
    """A photograph deleted, alone or with its sample: ``sample_id`` is the page it was on."""

    def __init__(self, message, sample_id):
        super().__init__(message)
        self.sample_id = sample_id


def sample_or_gone(pk, gone, samples=Sample.objects):
    """The sample (of ``samples``) numbered ``pk``. One deleted since raises DeletedMeanwhile saying
    ``gone``, what was not done, as the services say it; an id never deleted is a 404."""
    sample = samples.filter(pk=pk).first()
    if sample is not None:
        return sample
    raise sample_gone(pk, gone)


def sample_gone(pk, gone):
    """The DeletedMeanwhile that says sample ``pk`` was deleted and ``gone`` not done; a 404 where
    the trail records no deletion of it."""
    if (refusal := _refusal_if_deleted(pk, gone)) is None:
        raise Http404("No such sample.")
    return refusal


def _refusal_if_deleted(sample_pk, gone):
    if (accession := deleted_sample_accession(sample_pk)) is None:
        return None
    return DeletedMeanwhile(f"Sample {accession} was deleted meanwhile: {gone}")


def cell_or_gone(request, pk, gone, cells=Cell.objects):
    """The cell (of ``cells``) numbered ``pk``. The worker writes a photograph's cells without an
    audit row each, so a cell's id alone cannot tell one deleted from one never used: the form names
    the sample it was drawn for (its hidden ``sample`` field), and where the trail records that
    sample's deletion, DeletedMeanwhile says so. Anything else is a 404."""
    cell = cells.filter(pk=pk).first()
    if cell is not None:
        return cell
    sample_sent = request.POST.get("sample", "")
    if is_row_id(sample_sent) and (refusal := _refusal_if_deleted(int(sample_sent), gone)) is not None:
        raise refusal
    # Django's own sentence, which views.errors tells a page's script as "no longer there": the
    # cell may have gone with its photograph, or the page predates the hidden field.
    return get_object_or_404(cells, pk=pk)


def photograph_or_gone(pk, gone, photographs=SmearImage.objects):
    """The photograph (of ``photographs``) numbered ``pk``. One deleted since raises PhotographGone:
    deleted on its own, it is named ("smear-3.jpg was deleted meanwhile: nothing was queued."), as
    the services name it; taken with its sample, the sample is. A 404 where the trail has no row of
    it."""
    image = photographs.filter(pk=pk).first()
    if image is not None:
        return image
    deleted = deleted_photograph(pk)
    if deleted is None:
        raise Http404("No such photograph.")
    if deleted.original_filename is None:
        refusal = str(sample_gone(deleted.sample_id, gone))
    else:
        refusal = f"{isolated(deleted.original_filename)} was deleted meanwhile: {gone}"
    raise PhotographGone(refusal, deleted.sample_id)


def page_sent(request):
    """The page of the sample page a form was sent from (templates/lab/_page_field.html), 1 where it
    names none or no page number: a photograph deleted meanwhile no longer says which it was on."""
    page = request.POST.get("page", "")
    return int(page) if page.isascii() and page.isdigit() and len(page) <= 6 else 1


def refused_as_gone(request, refusal, sample_id=None, page_number=1):
    """A refusal said on the sample's page (its page ``page_number``) where the sample is still
    there, else on the sample list: a change to a sample or photograph deleted meanwhile has no
    page of its own to return to."""
    messages.error(request, str(refusal))
    if sample_id is not None and Sample.objects.filter(pk=sample_id).exists():
        return redirect(sample_page_address(sample_id, page_number))
    return redirect("lab:sample-list")


def answer_gone(request, refusal, sample_id=None, page_number=1, status=409):
    """``refusal`` in JSON with ``status`` to a page's script, else as refused_as_gone says it."""
    if wants_json(request):
        return JsonResponse({"error": str(refusal)}, status=status)
    return refused_as_gone(request, refusal, sample_id, page_number)
