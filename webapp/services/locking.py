"""A signed sample is locked: every service that would change its result asks here first.

Relabelling, counting an edge cell in, adding photographs or cells, re-classifying and deleting
are refused with a message that says who signed and how to reopen, until a hematologist reopens
the sample with a reason (webapp.services.sign_off).
"""

from django.db import transaction
from django.utils import formats, timezone

from webapp.models import Sample


class SampleLocked(PermissionError):
    """The sample is signed; the message is for the person who asked."""


class DeletedMeanwhile(LookupError):
    """The sample or photograph a change was asked for was deleted after the asking page read it;
    nothing was changed, and the message says so."""


NOTHING_CHANGED = "nothing was changed."


def ensure_editable(sample, action, gone=NOTHING_CHANGED):
    """Raise SampleLocked, saying why, if `action` (e.g. "Relabelling a cell") would change a
    signed sample's result, and DeletedMeanwhile if the sample is gone: "Sample H26-0001 was
    deleted meanwhile: " and `gone`, what was not done.

    Inside a transaction the sample's row is locked until it ends (on PostgreSQL; SQLite takes one
    writer at a time anyway), as sign_sample locks it: a signature cannot slip in between this
    check and the change the caller then writes, nor a deletion, so that a sample found here stays
    until then."""
    rows = Sample.objects.filter(pk=sample.pk)
    if transaction.get_connection().in_atomic_block:
        rows = rows.select_for_update()
    status = rows.values_list("status", flat=True).first()
    if status is None:
        # Deleted after the asking page read it (another tab, a colleague): a change written now
        # fails at its commit, or is reported done on nothing.
        raise DeletedMeanwhile(f"Sample {sample.accession_number} was deleted meanwhile: {gone}")
    if status != Sample.Status.SIGNED:
        return
    sample = Sample.objects.select_related("signed_by").get(pk=sample.pk)
    who = f" by {sample.signed_by.get_username()}" if sample.signed_by else ""
    when = ""
    if sample.signed_at:
        when = formats.date_format(timezone.localtime(sample.signed_at), "Y-m-d H:i T")
    # The action reads mid-sentence, after the colon, whatever case its caller wrote it in.
    action = action[:1].lower() + action[1:]
    raise SampleLocked(
        f"Sample {sample.accession_number} was signed{who}{' on ' + when if when else ''}: "
        f"{action} is refused while it is signed. A hematologist can reopen it, with a reason, "
        f"from the sample page."
    )
