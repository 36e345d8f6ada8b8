"""A hematologist's signature on a sample's result, its reopening, and the target count.

Signing locks the sample (webapp.services.locking): until a hematologist reopens it, with a
reason, nothing that changes its result is accepted. A sample is signed only when nothing stands
in the way (selectors.SignOffFacts.refusals): no flagged cell left unreviewed, every photograph
classified, no unidentified cell unless the hematologist keeps them as such, and the target count
of leukocytes reached unless a written reason says why not. Signing and reopening need the
permission webapp.sign_sample (the hematologist group; superusers have it).
"""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from webapp import audit
from webapp.cell_types import type_order
from webapp.counting import type_label
from webapp.models import Sample
from webapp.selectors import (
    leukocyte_formula,
    read_result_stamp,
    result_figures,
    result_stamp,
    sign_off_facts,
)
from webapp.services.locking import ensure_editable
from webapp.wording import person

logger = logging.getLogger(__name__)

SIGN_PERMISSION = "webapp.sign_sample"
# What was not done, said after "Sample H26-0001 was deleted meanwhile: ".
NOTHING_TO_SIGN = "there is nothing to sign."
NOTHING_TO_REOPEN = "there is nothing to reopen."
TARGET_NOT_SET = "the target count was not set."
# What a sample's page offers; LEUKOSCOPE_TARGET_COUNT, a new sample's, is one of them.
TARGET_CHOICES = settings.TARGET_COUNT_CHOICES
# PostgreSQL advisory lock taken by every signature until it commits (any number unused elsewhere).
SIGNATURE_ORDER_LOCK = 0x4C4B5349474E  # "LKSIGN"


class SignOffRefused(ValueError):
    """The sample cannot be signed (or reopened) now; the message lists why, for the person asking."""

    def __init__(self, message, reasons=()):
        super().__init__(message)
        self.reasons = list(reasons)


def may_sign(user):
    return bool(user and user.is_authenticated and user.has_perm(SIGN_PERMISSION))


def _ensure_may_sign(user, action):
    if not may_sign(user):
        raise PermissionDenied(f"{action} a sample is for hematologists (the sign_sample permission).")


@transaction.atomic
def sign_sample(sample, user, below_target_reason="", keep_unidentified=False, result_seen=None):
    """Sign the sample's result, or raise SignOffRefused saying every reason it cannot be.

    Fewer leukocytes than the target count pass with a written reason; unidentified cells pass
    when the hematologist keeps them as unidentified (they are listed apart on the report).
    ``result_seen`` is the selectors.result_stamp of the result the signer was shown (the sample
    page sends it): a signature certifies that result, so one that changed since is refused.
    """
    _ensure_may_sign(user, "Signing")
    locked = Sample.objects.select_for_update().filter(pk=sample.pk).first()
    if locked is None:  # deleted since the signer's page read it (a signed sample never is)
        raise SignOffRefused(f"Sample {sample.accession_number} was deleted meanwhile: {NOTHING_TO_SIGN}")
    sample = locked
    if sample.is_signed:
        raise SignOffRefused(f"Sample {sample.accession_number} is already signed.")
    # What stands in the way first, then the result: the worker stores a photograph's cells (or a
    # drawn box's) without the sample's lock. Read the other way round, a photograph finished in
    # between passed both checks, and the signature certified cells its signer was never shown;
    # read so, nothing the checks passed changes after them (no photograph or box left to finish).
    facts = sign_off_facts(sample)
    if result_seen is not None and (current := result_stamp(sample)) != result_seen:
        raise SignOffRefused(
            f"Sample {sample.accession_number} was not signed: its result changed since your page "
            f"was loaded ({result_changes(result_seen, current)}). Reload the page, check the result, "
            "then sign.")
    below_target_reason = (below_target_reason or "").strip()
    standing = [
        refusal for refusal in facts.refusals()
        if not (refusal.code == "below_target" and below_target_reason)
        and not (refusal.code == "unidentified" and keep_unidentified)
    ]
    if standing:
        raise SignOffRefused(
            f"Sample {sample.accession_number} cannot be signed yet: "
            + " ".join(refusal.message for refusal in standing), standing)
    sample.status = Sample.Status.SIGNED
    sample.signed_by = user
    sample.signed_by_name = person(user)
    sample.signed_at = signature_time()
    sample.below_target_reason = below_target_reason if facts.leukocytes < sample.target_count else ""
    sample.unidentified_kept = bool(keep_unidentified and facts.unidentified)
    sample.times_signed += 1
    sample.signed_figures = result_figures(leukocyte_formula(sample))
    audit.save_as(sample, user, ["status", "signed_by", "signed_by_name", "signed_at", "below_target_reason",
                                 "unidentified_kept", "times_signed", "signed_figures"])
    # A result leaving the lab (the LIS may fetch it from now on): by ids, never the accession number.
    logger.info("Sample %s signed by %s (signature %d%s)", sample.pk, user.get_username(),
                sample.times_signed, ", amended" if sample.times_signed > 1 else "")
    return sample


def signature_time():
    """The moment a signature is made, in an order a laboratory information system can poll by.

    The LIS asks for the results signed since the last signed_at it read. Were two signatures free to
    commit in another order than their clocks were read (the first one still writing its figures
    when the second commits), a poll between the commits would see the later one only, and the
    next poll, from its signed_at, would never list the earlier one. So each signature reads the
    clock only once the signatures before it have committed, and commits before the next reads it:
    on PostgreSQL a transaction-wide advisory lock, and the database's clock, one for every web
    server; SQLite's transactions here begin IMMEDIATE, one writer at a time, so they already do.
    """
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SIGNATURE_ORDER_LOCK])
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def result_changes(seen, current):
    """What changed between two result stamps, in words: "Neutrophil 2 -> 1, Blast 0 -> 1"."""
    before, after = read_result_stamp(seen), read_result_stamp(current)
    changed = [f"{type_label(name)} {before.get(name, 0)} \u2192 {after.get(name, 0)}"
               for name in sorted(set(before) | set(after), key=type_order)
               if before.get(name, 0) != after.get(name, 0)]
    return ", ".join(changed) or "the same counts, but cells were relabelled"


@transaction.atomic
def reopen_sample(sample, user, reason):
    """Reopen a signed sample so that its result can change again; the reason is required and kept."""
    _ensure_may_sign(user, "Reopening")
    sample = Sample.objects.select_for_update().get(pk=sample.pk)
    reason = (reason or "").strip()
    if not sample.is_signed:
        raise SignOffRefused(f"Sample {sample.accession_number} is not signed: there is nothing to reopen.")
    if not reason:
        raise SignOffRefused("Give the reason for reopening the sample: it is kept in its audit trail "
                             "and on the amended report.")
    sample.status = Sample.Status.REOPENED
    sample.reopened_by = user
    sample.reopened_by_name = person(user)
    sample.reopened_at = timezone.now()
    sample.reopen_reason = reason
    # The result as signed, which nothing could change since: a signature made before signatures
    # kept their figures has none stored.
    sample.previously_signed_figures = sample.signed_figures or result_figures(leukocyte_formula(sample))
    audit.save_as(sample, user, ["status", "reopened_by", "reopened_by_name", "reopened_at", "reopen_reason",
                                 "previously_signed_figures"])
    # The reason stays in the audit trail: it is free text, which may name the patient.
    logger.info("Sample %s reopened by %s: its signed result is withdrawn until it is signed again",
                sample.pk, user.get_username())
    return sample


@transaction.atomic
def set_target_count(sample, target_count, user=None):
    """How many leukocytes the sample should count before it is signed: 100 or 200."""
    # The sample locked until it is written, and read again as it stands under that lock.
    ensure_editable(sample, "changing the target count", gone=TARGET_NOT_SET)
    if target_count not in TARGET_CHOICES:
        raise SignOffRefused(f"The target count is one of {', '.join(map(str, TARGET_CHOICES))} leukocytes.")
    sample = Sample.objects.get(pk=sample.pk)
    if sample.target_count != target_count:
        sample.target_count = target_count
        audit.save_as(sample, user, ["target_count"])
    return sample
