"""Queries that read the lab's records: samples and their progress, the leukocyte formula, cell history,
model versions and their activations, the files a record holds in storage.

Each image is counted with the model version that last classified it (SmearImage.model_version):
older versions' cells stay in the history, as superseded calls, but never enter a sample's formula.
"""

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.paginator import EmptyPage, Page, Paginator
from django.db import connection
from django.db.models import Case, Count, Exists, F, Max, OuterRef, Prefetch, Q, Subquery, When, Window
from django.db.models.functions import Coalesce, RowNumber, Trim
from django.utils import timezone
from django.utils.functional import cached_property

from classifier.boxes import SAME_CELL_IOU, match_boxes
from classifier.labels import BINARY_CLASSES, FOUR_CLASSES
from classifier.ood import UNFAMILIAR_ABOVE
from classifier.training.adaptation import (
    DEFAULT_EPOCHS,
    DEFAULT_FOLDS,
    cross_validation_folds,
    usable_types,
)
from classifier.training.held_out import kept_epoch_label
from webapp.cell_types import review_types, type_order
from webapp.counting import RULES, Counting, counting_of, group_members, group_of, rule_for
from webapp.intake import HeldPhotographs, fingerprint_bands
from webapp.models import (
    AddedCellRequest,
    Cell,
    CellReview,
    FingerprintBand,
    ModelActivation,
    ModelVersion,
    Sample,
    SmearImage,
)
from webapp.proportions import exact_binomial_interval, wilson_interval
from webapp.wording import count_of

CELL_FIELDS = (
    "id", "index", "x0", "y0", "x1", "y1", "crop", "predicted_type", "confidence", "binary_call",
    "needs_review", "corrected_type", "cell_type", "created_at", "model_version", "image",
    "review_carried_from", "added_by_hand", "is_partial", "count_partial", "ood_score", "outlined",
    "reviewed_at",
)
HISTORY_CELL_FIELDS = (*CELL_FIELDS, "image__sample", "image__original_filename", "image__model_version")
HISTORY_FIELDS = (*HISTORY_CELL_FIELDS, "image__sample__accession_number", "image__sample__status")
# A call the network was unsure of that no reviewer has labelled yet.
AWAITING_REVIEW = Q(needs_review=True, corrected_type="")
# A cell the photograph's edge cuts that no reviewer has counted in: the formula leaves it out.
PARTIAL_LEFT_OUT = Q(is_partial=True, count_partial=False)
# How the formula reports such cells: as cut by the edge, except one labelled an artefact, which is
# reported as an artefact wherever it lies (it counts in nothing either way).
EDGE_LEFT_OUT = PARTIAL_LEFT_OUT & ~Q(cell_type="ARTEFACT")
# Cells the differential counts: leukocytes (a lab's own types too), whole or counted in.
IN_DIFFERENTIAL = ~Q(cell_type__in=[name for name, rule in RULES.items()
                                    if rule.counting is not Counting.DIFFERENTIAL]) & ~PARTIAL_LEFT_OUT
# Calls of the binary network (mononuclear / polynuclear) and calls of a type in one of those groups:
# a differential holding both has type percentages that leave the first out (leukocyte_formula), and
# is not signed until one version classifies the sample again.
GROUP_ONLY = Q(cell_type__in=list(BINARY_CLASSES)) & IN_DIFFERENTIAL
TYPED_IN_A_GROUP = (Q(cell_type__in=[name for name in RULES if group_of(name) and name not in BINARY_CLASSES])
                    & IN_DIFFERENTIAL)
# Cells a reviewer could not name: the sign-off waits until they are named or kept as such.
UNRESOLVED = Q(cell_type__in=[name for name, rule in RULES.items() if rule.counting is Counting.UNRESOLVED])
# Past this many matches the history says "more than N" instead of counting them all.
HISTORY_COUNT_CAP = 10_000
# Photographs whose fingerprints' bands go into one query: 8 orientations x 17 bands each, well
# under SQLite's 32,766 parameters.
HELD_ELSEWHERE_BATCH = 100
# Photographs on one page of the sample page. A sample of single-cell photographs holds thousands,
# and every card is a photograph, its outlines and its cells' rows with their review forms: all of
# 2,000 on one page was 16 MB of HTML and seconds to draw. Read at each call, so tests may set it.
SAMPLE_PAGE_PHOTOGRAPHS = 100


def known_cell_types():
    """Every type any stored model can call or a reviewer can give, in the lab's usual order."""
    names = {*FOUR_CLASSES, *review_types(FOUR_CLASSES)}
    for class_names in ModelVersion.objects.values_list("class_names", flat=True):
        names.update(class_names or [])
    return sorted(names, key=type_order)


def typed_accession(text):
    """An accession number as typed, in the one form it is stored and looked up in. NFKC folds what
    another keyboard or system writes for the same label into it: a Japanese input method's full-width
    "Ｈ２６－０１", an "é" sent as "e" and a combining accent; the surrounding spaces go, and a run of
    spaces inside is one (a page shows "H26  01" as "H26 01": two samples would read as one)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def samples_with_accession(accession):
    """Samples whose accession number is this one, whatever its case, its width (typed_accession)
    and surrounding spaces."""
    return Sample.objects.annotate(trimmed=Trim("accession_number")).filter(
        trimmed__iexact=typed_accession(accession)
    )


def _sample_cells(condition):
    """Whether the sample of the outer query holds a cell, as its formula counts cells, meeting
    ``condition``."""
    return Exists(current_cells().filter(condition, image__sample=OuterRef("pk")))


def samples_awaiting_review_filter():
    """Q for samples holding a flagged call no one has reviewed: what the review lists wait on."""
    return Q(_sample_cells(AWAITING_REVIEW))


def samples_waiting_for_signature_filter():
    """Q for unsigned samples a hematologist can sign now: SignOffFacts.refusals() would leave at most
    a decision of the signer's own (below the target, unidentified cells kept) and at least one
    leukocyte is counted. The same rules in SQL, so that a list can page them; a test holds the two
    to agree."""
    photographs = SmearImage.objects.filter(sample=OuterRef("pk"))
    not_done = (SmearImage.Status.QUEUED, SmearImage.Status.PROCESSING, SmearImage.Status.FAILED)
    boxes_waiting = AddedCellRequest.objects.filter(image__sample=OuterRef("pk"),
                                                    status=AddedCellRequest.Status.PENDING)
    return (~Q(status=Sample.Status.SIGNED) & Q(Exists(photographs))
            & ~Q(Exists(photographs.filter(status__in=not_done))) & ~Q(Exists(boxes_waiting))
            & ~samples_awaiting_review_filter() & Q(_sample_cells(IN_DIFFERENTIAL))
            & ~(Q(_sample_cells(GROUP_ONLY)) & Q(_sample_cells(TYPED_IN_A_GROUP))))


def samples_with_progress(*, accession="", accession_contains="", statuses=None, waiting=None,
                          oldest_first=False, signed_since=None, signed_after=None):
    """Samples newest first (or oldest first), each with how many photographs it has, are done and
    failed; narrowed to one accession number, or to those containing a piece of one, to some
    sign-off states, and to those ``waiting`` for "review" or a "signature".
    With ``signed_since``, the results signed since then, in the order they were signed: a
    laboratory information system files them oldest first and polls again from the last one's
    signed_at (a result signed again after a reopening comes again, amended); ``signed_after``, the
    id of the result signed at ``signed_since`` that a page ended with, starts after that one."""
    done = Count("images", filter=Q(images__status=SmearImage.Status.DONE))
    failed = Count("images", filter=Q(images__status=SmearImage.Status.FAILED))
    samples = Sample.objects.select_related("created_by", "signed_by", "reopened_by").annotate(
        image_count=Count("images"), done_count=done, failed_count=failed
    ).order_by(*(("created_at", "id") if oldest_first else ("-created_at", "-id")))
    if waiting == "review":
        samples = samples.filter(samples_awaiting_review_filter())
    elif waiting == "signature":
        samples = samples.filter(samples_waiting_for_signature_filter())
    if accession:  # one sample, matched as the upload form refuses a duplicate: whatever the case
        samples = samples.filter(accession_number__iexact=typed_accession(accession))
    if accession_contains:
        samples = samples.filter(accession_number__icontains=typed_accession(accession_contains))
    if statuses:
        samples = samples.filter(status__in=statuses)
    if signed_since:
        since = (Q(signed_at__gt=signed_since) | Q(signed_at=signed_since, id__gt=signed_after)
                 if signed_after else Q(signed_at__gte=signed_since))
        samples = samples.filter(since, status=Sample.Status.SIGNED).order_by("signed_at", "id")
    return samples


def samples_awaiting_review(since):
    """Samples received since then holding calls the network was unsure of that no one has
    reviewed, newest first, each with how many; counted on the cells each formula counts."""
    return (
        current_cells().filter(AWAITING_REVIEW, image__sample__created_at__gte=since)
        .values(sample_id=F("image__sample_id"), accession=F("image__sample__accession_number"))
        .annotate(flagged=Count("id")).order_by("-sample_id")
    )


@dataclass
class SampleCounts:
    leukocytes: int = 0  # cells the differential counts
    awaiting_review: int = 0  # flagged calls nobody has reviewed yet
    unidentified: int = 0  # cells a reviewer marked unidentified
    awaiting_at_edge: int = 0  # of awaiting_review, cells the formula leaves out as cut by the edge
    group_only: int = 0  # counted calls of a group alone (a binary network's), GROUP_ONLY
    typed_in_group: int = 0  # counted calls of a type that belongs to a group, TYPED_IN_A_GROUP


def sample_cell_counts(sample_ids):
    """Sample id -> SampleCounts over the cells each formula counts, in one query for a page."""
    rows = (
        current_cells().filter(image__sample__in=list(sample_ids)).values("image__sample")
        .annotate(
            leukocytes=Count("id", filter=IN_DIFFERENTIAL),
            awaiting=Count("id", filter=AWAITING_REVIEW),
            unidentified=Count("id", filter=UNRESOLVED & ~PARTIAL_LEFT_OUT),
            awaiting_at_edge=Count("id", filter=AWAITING_REVIEW & PARTIAL_LEFT_OUT),
            group_only=Count("id", filter=GROUP_ONLY),
            typed_in_group=Count("id", filter=TYPED_IN_A_GROUP),
        ).order_by()
    )
    return {row["image__sample"]: SampleCounts(
                row["leukocytes"], row["awaiting"], row["unidentified"], row["awaiting_at_edge"],
                row["group_only"], row["typed_in_group"])
            for row in rows}


# --- sign-off ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One reason a sample cannot be signed now, in words for the person signing."""

    code: str  # "unreviewed", "unidentified", "below_target", "photographs", "no_leukocytes", "mixed_calls"
    message: str
    overridable: bool = False  # the hematologist may sign anyway: with a reason, or keeping them


@dataclass
class SignOffFacts:
    """What decides whether a sample can be signed, read in a few queries for one or many samples."""

    status: str
    target_count: int
    leukocytes: int = 0
    awaiting_review: int = 0
    unidentified: int = 0
    awaiting_at_edge: int = 0  # of awaiting_review, left out of the formula as cut by the edge
    images: int = 0
    unfinished: int = 0  # photographs queued or being classified
    failed: int = 0
    boxes_waiting: int = 0  # cells drawn by hand the worker has not classified yet
    times_signed: int = 0  # more than once: a signed result that was reopened and amended
    group_only: int = 0  # SampleCounts.group_only
    typed_in_group: int = 0

    def refusals(self):
        """Every reason the sample cannot be signed as it stands (webapp.services.sign_off)."""
        found = []
        if self.awaiting_review:
            # A flagged cell the edge cuts is reviewed too: its type may be one the lab must not
            # miss, and a reviewer may count it in. Said, since the formula beside shows none of them.
            which = "it is" if self.awaiting_review == 1 else f"{self.awaiting_at_edge} of them"
            at_edge = (f" ({which} cut by a photograph's edge: left out of the formula, reviewed all the "
                       "same)" if self.awaiting_at_edge else "")
            found.append(Refusal("unreviewed", f"{count_of(self.awaiting_review, 'cell')} flagged for review "
                                 f"{_were(self.awaiting_review)} not reviewed yet{at_edge}."))
        if self.unidentified:
            found.append(Refusal(
                "unidentified", f"{count_of(self.unidentified, 'cell')} {_were(self.unidentified)} marked "
                f"unidentified: name {_them(self.unidentified)}, or keep {_them(self.unidentified)} "
                "as unidentified when signing.", True))
        if not self.images:
            found.append(Refusal("photographs", "The sample has no photograph."))
        if self.unfinished:
            found.append(Refusal("photographs", f"{count_of(self.unfinished, 'photograph')} still queued or "
                                 f"being classified: wait until {_they_are(self.unfinished)} done."))
        if self.failed:
            found.append(Refusal("photographs", f"{count_of(self.failed, 'photograph')} failed: try "
                                 f"{_them(self.failed)} again or delete {_them(self.failed)}."))
        if self.boxes_waiting:
            found.append(Refusal("photographs", f"{count_of(self.boxes_waiting, 'cell')} drawn by hand still "
                                 f"being classified: wait until {_they_are(self.boxes_waiting)} done."))
        if self.images and not self.unfinished and not self.leukocytes:
            # A differential of no cells is no result: 0% of every type, with no range to give.
            found.append(Refusal("no_leukocytes", "No leukocyte is counted: there is no differential to "
                                 "sign. Add photographs, or draw a missed cell on a photograph."))
        if self.group_only and self.typed_in_group:
            n = self.group_only
            found.append(Refusal(
                "mixed_calls", f"{count_of(n, 'cell')} {_were(n)} called only mononuclear or polynuclear "
                f"(a binary network's calls) beside {count_of(self.typed_in_group, 'cell')} called by type: "
                "the type percentages would leave them out. Ask an administrator to re-classify the sample "
                "with one version (Model versions, Re-classify)."))
        if self.leukocytes and self.leukocytes < self.target_count:
            found.append(Refusal(
                "below_target", f"{self.leukocytes} of {self.target_count} leukocytes counted: add "
                "photographs, or give the reason for signing below the target.", True))
        return found

    @property
    def ready(self):
        """In progress (or reopened) and nothing stands in the way: "ready to sign" in lists."""
        return self.status != Sample.Status.SIGNED and not self.refusals()

    @property
    def signable(self):
        """A hematologist can sign it now: at least one leukocyte counted and nothing left but a
        decision of the signer's own (below the target, unidentified cells kept). The rule
        samples_waiting_for_signature_filter writes in SQL."""
        return (self.status != Sample.Status.SIGNED and bool(self.leukocytes)
                and all(refusal.overridable for refusal in self.refusals()))

    @property
    def badge(self):
        """(state, words) for a status badge: in_progress / ready / signed / reopened."""
        if self.status == Sample.Status.SIGNED:
            # The LIS and the report call a result signed again after a reopening amended; a list
            # that said only "Signed" would hide that its figures changed since first read.
            return "signed", "Signed, amended" if self.times_signed > 1 else "Signed"
        if self.ready:
            return "ready", "Ready to sign"
        if self.status == Sample.Status.REOPENED:
            return "reopened", "Reopened"
        if self.signable:
            # Listed as waiting for a signature, with a decision left to the signer: said which,
            # as the home page's list says it. Below the target, counting usually goes on.
            if any(refusal.code == "below_target" for refusal in self.refusals()):
                return "in_progress", "Below the target"
            return "ready", "Ready to sign, unidentified cells to decide"
        return "in_progress", "In progress"


def _were(n):
    return "was" if n == 1 else "were"


def _them(n):
    return "it" if n == 1 else "them"


def _they_are(n):
    return "it is" if n == 1 else "they are"


def sign_off_facts_for(sample_ids):
    """Sample id -> SignOffFacts, in four queries whatever the number of samples."""
    sample_ids = list(sample_ids)
    unfinished = (SmearImage.Status.QUEUED, SmearImage.Status.PROCESSING)
    facts = {
        row["pk"]: SignOffFacts(row["status"], row["target_count"], images=row["n_images"],
                                unfinished=row["n_unfinished"], failed=row["n_failed"],
                                times_signed=row["times_signed"])
        for row in Sample.objects.filter(pk__in=sample_ids)
        .values("pk", "status", "target_count", "times_signed")
        .annotate(n_images=Count("images"),
                  n_unfinished=Count("images", filter=Q(images__status__in=unfinished)),
                  n_failed=Count("images", filter=Q(images__status=SmearImage.Status.FAILED)))
        .order_by()
    }
    for sample_id, counts in sample_cell_counts(facts).items():
        entry = facts[sample_id]
        entry.leukocytes = counts.leukocytes
        entry.awaiting_review = counts.awaiting_review
        entry.unidentified = counts.unidentified
        entry.awaiting_at_edge = counts.awaiting_at_edge
        entry.group_only, entry.typed_in_group = counts.group_only, counts.typed_in_group
    waiting = (AddedCellRequest.objects.filter(image__sample__in=sample_ids,
                                               status=AddedCellRequest.Status.PENDING)
               .values_list("image__sample").annotate(n=Count("id")).order_by())
    for sample_id, n in waiting:
        facts[sample_id].boxes_waiting = n
    return facts


def sign_off_facts(sample):
    return sign_off_facts_for([sample.pk])[sample.pk]


@dataclass
class AwaitingSignature:
    sample_id: int
    accession: str
    leukocytes: int
    target_count: int
    decisions: list  # the overridable Refusals a signer decides on; empty: ready to sign


def samples_awaiting_signature(since, shown):
    """(how many, the ``shown`` newest as AwaitingSignature): unsigned samples received since then
    that a hematologist can sign now (samples_waiting_for_signature_filter)."""
    waiting = Sample.objects.filter(samples_waiting_for_signature_filter(), created_at__gte=since)
    newest = list(waiting.order_by("-pk").values_list("pk", "accession_number")[:shown])
    facts = sign_off_facts_for(pk for pk, _ in newest)
    rows = [AwaitingSignature(pk, accession, facts[pk].leukocytes, facts[pk].target_count,
                              facts[pk].refusals()) for pk, accession in newest]
    return waiting.count(), rows


def reopened_samples():
    """Samples a hematologist reopened, with the reason, and not yet signed again: results the lab
    took back, to correct. Most recently reopened first."""
    return (Sample.objects.filter(status=Sample.Status.REOPENED).select_related("reopened_by")
            .order_by("-reopened_at", "-pk"))


def recently_signed_samples(since):
    """Samples signed since then, newest signature first, with their signer: what a results
    reader (the lab's information system) fetches."""
    return (Sample.objects.filter(status=Sample.Status.SIGNED, signed_at__gte=since)
            .select_related("signed_by").order_by("-signed_at", "-pk"))


def usernames(user_ids):
    """User id -> user name, for the ids an audit row names."""
    ids = [int(pk) for pk in user_ids if str(pk).isdigit()]
    return {str(pk): name for pk, name in
            get_user_model().objects.filter(pk__in=ids).values_list("pk", get_user_model().USERNAME_FIELD)}


def sample_timeline(sample_id):
    """The sample's audit trail, newest first: its own rows and its photographs', cells' and
    reviews' (each carries the sample's id, webapp.audit), kept after the sample is deleted."""
    return (
        LogEntry.objects.filter(additional_data__sample_id=sample_id)
        .select_related("actor", "content_type").order_by("-timestamp", "-id")
    )


def deleted_sample_accession(sample_id):
    """The accession number a deleted sample had, read from its deletion's audit row
    (services.deletion); None where the trail records no deletion of that id."""
    return (LogEntry.objects.get_for_model(Sample)
            .filter(object_id=sample_id, action=LogEntry.Action.DELETE)
            .values_list("object_repr", flat=True).first())


def sample_entered_by_on_record(sample_id):
    """The id of the account that entered a sample, read from its creation's audit row: the sample
    may be gone; None where the row names no account (made by a command) or there is none."""
    return (LogEntry.objects.get_for_model(Sample)
            .filter(object_id=sample_id, action=LogEntry.Action.CREATE)
            .values_list("actor_id", flat=True).first())


@dataclass(frozen=True)
class DeletedPhotograph:
    sample_id: int
    # None where it went with its sample, whose deletion writes the one row (services.deletion).
    original_filename: str | None


def deleted_photograph(image_id):
    """A deleted photograph as its audit rows recall it: its sample's id (each row carries it) and,
    where it was deleted on its own, its file's name from that deletion's row. None where the trail
    holds no row of that photograph."""
    rows = LogEntry.objects.get_for_model(SmearImage).filter(object_id=image_id)
    deleted = (rows.filter(action=LogEntry.Action.DELETE)
               .values_list("additional_data", "changes").first())
    if deleted is not None:
        data, changes = deleted
        return DeletedPhotograph(data["sample_id"], changes["original_filename"][0])
    data = rows.values_list("additional_data", flat=True).first()
    return DeletedPhotograph(data["sample_id"], None) if data and data.get("sample_id") else None


@dataclass
class SampleProgress:
    total: int
    counts: dict

    @property
    def finished(self):
        return self.counts.get("done", 0) + self.counts.get("failed", 0)

    @property
    def percent(self):
        return round(100 * self.finished / self.total) if self.total else 100

    @property
    def complete(self):
        return self.finished >= self.total


def sample_progress(sample):
    counts = dict(sample.images.values_list("status").annotate(n=Count("id")).order_by())
    return SampleProgress(total=sum(counts.values()), counts=counts)


def image_statuses(sample, image_ids=None):
    """Each photograph's (those of ``image_ids`` where given) id, status, error and file name, for
    the sample page's progress poll."""
    images = sample.images.all() if image_ids is None else sample.images.filter(pk__in=image_ids)
    return list(images.values("id", "status", "error", "original_filename"))


def sample_record_counts(sample):
    """How many photographs and classified cells (every version's) a sample holds."""
    return {
        "images": sample.images.count(),
        "cells": Cell.objects.filter(image__sample=sample).count(),
    }


def sample_version_id(sample):
    """The version that classified every classified photograph of the sample, if they share one.

    Photographs added to a sample later, or tried again, are classified by it even after another
    version is activated: one differential count comes from one network. An administrator moves
    a whole sample to the active version by re-classifying it; while that runs, or where it
    failed, a photograph counts with the version it was queued for.
    """
    awaiting = Q(status__in=(SmearImage.Status.QUEUED, SmearImage.Status.PROCESSING,
                             SmearImage.Status.FAILED), requested_version__isnull=False)
    versions = list(
        sample.images.annotate(
            headed_for=Case(When(awaiting, then=F("requested_version")), default=F("model_version"))
        ).exclude(headed_for=None).order_by().values_list("headed_for", flat=True).distinct()[:2]
    )
    return versions[0] if len(versions) == 1 else None


def current_cells(sample=None, image=None):
    """Cells as the latest model version that classified each image called them."""
    # On SQLite "+ 0", as for confidence in cell_history: compared bare, the column lets SQLite
    # drive a newest-first history from the (image, version, index) key and sort all 100,000 cells
    # (117 ms a page, against 2 ms walking the newest-first index; bench/web.py). Not on PostgreSQL,
    # whose planner then guesses the comparison keeps 0.5% of the cells: a year's 2.5 million, for
    # the history's 200th page, were joined and sorted on disk (1.8 s), not walked by the
    # newest-first index (12 ms).
    counted_version = F("model_version_id") + 0 if connection.vendor == "sqlite" else F("model_version_id")
    cells = Cell.objects.alias(counted_version=counted_version).filter(
        counted_version=F("image__model_version_id")
    )
    if sample is not None:
        cells = cells.filter(image__sample=sample)
    if image is not None:
        cells = cells.filter(image=image)
    return cells


def current_counterpart(cell):
    """For a superseded call, the same physical cell as the version now counted called it, if found."""
    candidates = list(current_cells(image=cell.image_id).only("id", "x0", "y0", "x1", "y1"))
    matched = match_boxes([cell.box], [candidate.box for candidate in candidates], SAME_CELL_IOU)
    return candidates[matched[0][1]] if matched else None


@dataclass
class ImageCells:
    """A photograph and the cells its sample's formula counts on it, by number."""

    image: SmearImage
    cells: list


def _photographs_in_page_order(sample_id):
    # By id, as uploaded: photograph_page_number counts the ids before a photograph's own.
    return SmearImage.objects.filter(sample_id=sample_id).order_by("pk")


def sample_photograph_page(sample, page_number):
    """The Paginator page of the sample's photograph ids that the sample page's page
    ``page_number`` shows (its cards, and its progress poll's photographs), read as the other lists
    read theirs (Paginator.get_page): what is no page number gives the first page, a number past
    the last the last. A number under 1 gives the first, the nearest, where Paginator gives the
    last."""
    try:
        if int(page_number) < 1:
            page_number = 1
    except (TypeError, ValueError):
        pass  # no page number: Paginator's first page
    ids = _photographs_in_page_order(sample.pk).values_list("pk", flat=True)
    return Paginator(ids, SAMPLE_PAGE_PHOTOGRAPHS).get_page(page_number)


def photograph_page_number(image):
    """The page of its sample's page that shows this photograph's card."""
    before = _photographs_in_page_order(image.sample_id).filter(pk__lt=image.pk)
    return before.count() // SAMPLE_PAGE_PHOTOGRAPHS + 1


def sample_images_with_cells(sample, image_ids=None):
    """The sample's photographs (those of ``image_ids`` where given), each with its current cells
    (ImageCells), in two queries."""
    images = _photographs_in_page_order(sample.pk)
    cells = current_cells(sample).only(*CELL_FIELDS, "probabilities").order_by("image_id", "index")
    if image_ids is not None:
        images, cells = images.filter(pk__in=image_ids), cells.filter(image__in=image_ids)
    images = list(images)
    by_image = {}
    for cell in cells:
        by_image.setdefault(cell.image_id, []).append(cell)
    photographs = []
    for image in images:
        current = by_image.get(image.pk, [])
        for cell in current:
            cell.image = image  # no query per cell for its image
        photographs.append(ImageCells(image, current))
    return photographs


def reviewed_cell_windows(with_image=False):
    """(stored context window name, reviewer's type) of every reviewed cell that has a window, and
    with_image its photograph's id as a third item.

    A cell classified by several versions is one physical cell: it is listed once, with its newest
    review (a label carried to a later version's call is the same review, read from the cell it
    was made on), so re-classification does not weight it twice.
    """
    cells = (
        _own_reviews_with_windows()
        .order_by("reviewed_at", "id")
        .values_list("image_id", "x0", "y0", "x1", "y1", "window", "corrected_type")
    )
    windows = {}
    for image_id, x0, y0, x1, y1, window, corrected in cells:
        windows[(image_id, x0, y0, x1, y1)] = (window, corrected, *((image_id,) if with_image else ()))
    return list(windows.values())


def _own_reviews_with_windows():
    """Reviewed cells with a stored window, each review counted on the cell it was made on (the
    cell_reviewed_newest index holds these rows alone). Every review records when it was made
    (services.review): adaptation_counts' test of "no newer review" would pass a review without
    one, where the window function and Python's sort place it by the database's NULL order."""
    return Cell.objects.exclude(corrected_type="").filter(review_carried_from__isnull=True).exclude(window="")


def type_vocabulary():
    """Every type a cell can have, called or given, in the lists' order: the lab's rules' and
    every version's classes (cell_types.review_types draws from nothing else). Asking the versions,
    a handful of rows, spares reading which types millions of cells hold."""
    names = set(RULES)
    for class_names in ModelVersion.objects.values_list("class_names", flat=True):
        names.update(class_names or ())
    return sorted(names, key=type_order)


def adaptation_counts(task, folds):
    """(cells, left_out, photographs): of reviewed_cell_windows, the cells an adaptation of a network
    of ``task`` learns from, those of types it has no class for, and the photographs holding the
    first, counted up to ``folds`` (all the folds need). Counted in the database, by the run's rule
    (each box once, with its newest review): the models page asks on every view, and a busy lab's
    year holds half a million reviewed cells (0.3 s here, 1 s read into Python)."""
    reviewed = _own_reviews_with_windows()
    learnt_types = usable_types(type_vocabulary(), task)
    learnt = Q(corrected_type__in=learnt_types)
    newest = reviewed.annotate(newest=Window(
        RowNumber(), partition_by=[F(name) for name in _SAME_BOX],
        order_by=[F("reviewed_at").desc(), F("id").desc()],
    )).filter(newest=1)
    if not learnt_types:
        # An empty IN makes Django skip the whole query as matching nothing, every cell included.
        return 0, newest.count(), 0
    counts = newest.aggregate(every=Count("pk"), cells=Count("pk", filter=learnt))
    # The same rule as a test of each row, which lets the database stop at the folds' count.
    reviewed_since = reviewed.filter(**{name: OuterRef(name) for name in _SAME_BOX}).filter(
        Q(reviewed_at__gt=OuterRef("reviewed_at"))
        | Q(reviewed_at=OuterRef("reviewed_at"), id__gt=OuterRef("id")))
    photographs = (reviewed.filter(learnt).filter(~Exists(reviewed_since))
                   .order_by().values("image_id").distinct()[:folds])
    return counts["cells"], counts["every"] - counts["cells"], len(photographs)


_SAME_BOX = ("image_id", "x0", "y0", "x1", "y1")


# A photograph or a sample where more than this share of the cells is unfamiliar to the network
# (ood_score above 1) is unlike the images it was trained on as a whole: another stain, camera or
# lab.
UNFAMILIAR_SHARE = 0.5
# ... judged on at least this many scored cells. One in ten of the training labs' own cells scores
# above 1 by design (classifier.ood.HELD_OUT_QUANTILE), so a photograph of one cell, which is most
# single-cell crops and many smear fields, would be called unlike the training images one time in
# ten; with two cells, both unfamiliar, about one in a hundred. The cell's own flag still shows.
UNFAMILIAR_MIN_CELLS = 2


def mostly_unfamiliar(unfamiliar, scored):
    """Whether ``unfamiliar`` of ``scored`` cells make their photograph or sample unlike the
    network's training images."""
    return scored >= UNFAMILIAR_MIN_CELLS and unfamiliar > UNFAMILIAR_SHARE * scored


# The verdict on a photograph or a sample rests on the cells the detector found. A reviewer draws a
# box round what the detector missed, often an odd cell or nothing at all; two such boxes, each
# flagged on its own, would otherwise call a whole photograph unlike the training images. The
# middle of a one-cell photograph where no cell was outlined is no found cell either: often bare
# slide, and scored unfamiliar as such.
JUDGED = Q(ood_score__isnull=False, added_by_hand=False, outlined=True)


def _judged(cells):
    return [cell for cell in cells if cell.ood_score is not None and not cell.added_by_hand and cell.outlined]


def familiarity(cells):
    """(unfamiliar, scored): how many of the cells the detector found score above 1, and of how
    many with a score; drawn boxes and unoutlined middles left out (JUDGED)."""
    scores = [cell.ood_score for cell in _judged(cells)]
    return sum(score > UNFAMILIAR_ABOVE for score in scores), len(scores)


def unfamiliar_unreviewed(cells):
    """How many of the unfamiliar cells familiarity counts no person has labelled."""
    return sum(1 for cell in _judged(cells) if cell.ood_score > UNFAMILIAR_ABOVE and not cell.corrected_type)


def unfamiliar_photograph(cells):
    """Whether most of a photograph's detected cells (those with a score) are unfamiliar to the
    network."""
    return mostly_unfamiliar(*familiarity(cells))


# A failed drawn box is shown beside its photograph for this long, then only kept on record.
FAILED_ADDITION_SHOWN_FOR = timedelta(hours=24)


def added_cell_requests(sample, now=None):
    """Image id -> the boxes drawn on it still waiting for the worker and those that failed lately
    (AddedCellRequest, oldest first)."""
    since = (now or timezone.now()) - FAILED_ADDITION_SHOWN_FOR
    requests = AddedCellRequest.objects.filter(image__sample=sample).filter(
        Q(status=AddedCellRequest.Status.PENDING)
        | Q(status=AddedCellRequest.Status.FAILED, finished_at__gte=since)
    ).order_by("id")
    by_image = {}
    for request in requests:
        by_image.setdefault(request.image_id, []).append(request)
    return by_image


def cells_with_review_trail():
    """Cells with their photograph, sample, reviewers, review trail and the call whose label they
    carried over, for the cell page."""
    return (
        Cell.objects.select_related("image__sample", "reviewed_by", "review_carried_from")
        .defer("model_version__model_bytes").select_related("model_version")
        .prefetch_related(Prefetch("reviews", queryset=CellReview.objects.select_related("reviewed_by")))
    )


def cells_with_details():
    """Cells with everything the API tells of one: probabilities, stored pictures, review dates."""
    return Cell.objects.select_related("image__sample").only(
        *HISTORY_FIELDS, "probabilities", "heatmap", "window", "reviewed_at", "detection_score",
        "review_carried_from",
    )


def _walk_order(cells):
    return list(cells.order_by("image_id", "index").values_list("pk", "image_id"))


def walk_cells(cell):
    """(id, photograph id) of the cells a reviewer walks through from this one's page, in order: the
    sample's counted calls, photograph by photograph as uploaded, each by cell number; from a
    superseded call, the calls its version made on its photograph."""
    if cell.is_superseded:
        cells = Cell.objects.filter(image=cell.image, model_version=cell.model_version)
    else:
        cells = current_cells(sample=cell.image.sample_id)
    return _walk_order(cells)


def numbers_on_photographs(walked):
    """Cell id -> its number on its photograph, as the sample page and the cell's own page number
    it: its place among its photograph's calls in ``walked`` (walk_cells' order)."""
    numbers, seen = {}, Counter()
    for pk, image_id in walked:
        seen[image_id] += 1
        numbers[pk] = seen[image_id]
    return numbers


def cell_number(cell, walked):
    """The cell's number on its photograph (numbers_on_photographs)."""
    return numbers_on_photographs(walked)[cell.pk]


def _cell_name(number, photograph):
    return f"Cell {number} on {photograph}"


def cell_name(cell):
    """"Cell 3 on smear-12.jpg", for messages a reviewer must match to a row."""
    return _cell_name(cell_number(cell, walk_cells(cell)), cell.image.original_filename)


def cell_names(cell_ids):
    """Cell id -> cell_name, in two queries, for the cells of these ids that the sample page still
    shows; a call a later version superseded, or a cell since deleted, gets none."""
    cells = list(current_cells().filter(pk__in=list(cell_ids))
                 .values_list("pk", "image_id", "image__original_filename"))
    photographs = {image_id: name for _, image_id, name in cells}
    numbers = numbers_on_photographs(_walk_order(current_cells().filter(image__in=list(photographs))))
    return {pk: _cell_name(numbers[pk], photographs[image_id]) for pk, image_id, _ in cells}


def names_of_sample_cells(sample, cells):
    """Cell id -> cell_name for ``cells``, every current cell of ``sample`` in walk order (as
    gallery_cells reads them), with one query for the photographs' names."""
    photographs = dict(SmearImage.objects.filter(sample=sample).values_list("pk", "original_filename"))
    numbers = numbers_on_photographs([(cell.pk, cell.image_id) for cell in cells])
    # .get: a photograph deleted between the two reads leaves its cells named without it.
    return {cell.pk: _cell_name(numbers[cell.pk], photographs.get(cell.image_id, "a deleted photograph"))
            for cell in cells}


def _held_out_run_prefix(pk):
    return f"model version v{pk} ("


def held_out_run_name(version):
    """How a refit names the held-out run whose temperature and review threshold it borrows."""
    return f"{_held_out_run_prefix(version.pk)}{kept_epoch_label(version.metrics)})"


def _refits_borrowing_from(version):
    """Other versions whose record names ``version`` as the held-out run they borrowed from."""
    named = _held_out_run_prefix(version.pk)
    return ModelVersion.objects.exclude(pk=version.pk).filter(
        Q(metrics__refit__temperature_source__startswith=named)
        | Q(metrics__review__refit_from__startswith=named)
        | Q(hyperparameters__temperature_source__startswith=named))


def version_deletion_refusal(version):
    """Why a version must stay, or None where deleting it loses nothing: a training that failed or
    was cancelled (a typing slip on the retraining form leaves one), or a ready one a lab trained
    that never served (an experiment it chose not to use), either having classified nothing. Every
    stored result keeps the network that produced it, the activation trail every version that
    served, an adaptation the version it started from, a refit the held-out run it borrowed its
    calibration from, and every lab the bundled networks."""
    Status = ModelVersion.Status
    if version.status == Status.READY:
        if version.source == ModelVersion.Source.BUNDLED:
            return f"v{version.pk} is bundled with the software: it stays, for comparison."
        # Its own activation rows, or another's that names it as the one it replaced.
        if (version.activations.exists()
                or ModelActivation.objects.filter(previous_version=version).exists()):
            return f"v{version.pk} served: the record of which version served when names it, so it stays."
        adapted = version.adaptations.order_by("pk").first()
        if adapted is not None:
            return (f"v{adapted.pk} was adapted from v{version.pk}: it stays, as that version's "
                    "starting point (delete it first, if it never served either).")
        refit = _refits_borrowing_from(version).order_by("pk").first()
        if refit is not None:
            return (f"v{refit.pk} borrowed its temperature and review threshold from v{version.pk}, "
                    "which chose them on its validation cells: it stays, as that record.")
    elif version.status not in (Status.FAILED, Status.CANCELLED):
        return (f"v{version.pk} is {version.get_status_display().lower()}: only a failed or cancelled "
                "training, or a ready version that never served, can be deleted.")
    if version.cells.exists() or version.images.exists():
        return f"v{version.pk} classified photographs, whose results name it: it stays."
    return None


def adaptation_plan():
    """(epochs of each fine-tune, cross-validation folds) of "Adapt to this lab": the site's
    settings where set, else the classifier's defaults."""
    epochs = settings.ADAPTATION_EPOCHS if settings.ADAPTATION_EPOCHS is not None else DEFAULT_EPOCHS
    folds = settings.ADAPTATION_FOLDS if settings.ADAPTATION_FOLDS is not None else DEFAULT_FOLDS
    return epochs, folds


def adaptation_epochs(photographs):
    """Every epoch of an adaptation on the cells of ``photographs`` photographs: one fine-tune per
    cross-validation fold (a photograph's cells in one fold), then the final one."""
    epochs, folds = adaptation_plan()
    return (cross_validation_folds(folds, photographs) + 1) * epochs


def fitted_review_thresholds(version_ids):
    """The review thresholds these versions fitted on their validation cells (None for each that
    fitted none)."""
    return list(ModelVersion.objects.filter(pk__in=version_ids).values_list(
        "metrics__review__confidence_threshold", flat=True))


def class_names_by_version(version_ids):
    """Version id -> the class names its network calls."""
    return dict(ModelVersion.objects.filter(pk__in=version_ids).values_list("pk", "class_names"))


# A manual differential counts at least this many leukocytes; below it, say how loose each share is.
MANUAL_DIFFERENTIAL_COUNT = 100


def result_stamp(sample):
    """What a signature certifies, as a string a page carries: the count of each type the sample's
    report shows (cells cut by the edge and left out aside), then a digest of which cell holds which
    label. Two stamps differ when anything the report counts changed, including two cells whose
    labels were swapped; read_result_stamp gives the counts back, to say what changed."""
    counted = current_cells(sample).exclude(EDGE_LEFT_OUT)  # as leukocyte_formula reports them
    labels = list(counted.order_by("pk").values_list("pk", "cell_type"))
    per_type = Counter(cell_type for _, cell_type in labels)
    digest = hashlib.sha256(repr(labels).encode()).hexdigest()[:16]
    counts = ",".join(f"{name}:{per_type[name]}" for name in sorted(per_type, key=type_order))
    return f"{counts};{digest}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def label_stamp(cell):
    """What a page showed of a cell's label, as a string its relabelling form sends back: 12 hex
    digits of a digest of the type the formula counts and when a person last set it. It changes
    with every review that changes the cell (a confirmation of the network's call too, which leaves
    the type as it was), so services.review can refuse a relabel made on a stale page."""
    # In microseconds, whatever time zone the database connection gave the moment in.
    reviewed = (cell.reviewed_at - _EPOCH) // timedelta(microseconds=1) if cell.reviewed_at else ""
    return hashlib.sha256(f"{cell.cell_type}\n{reviewed}".encode()).hexdigest()[:12]


LABEL_STAMP_PATTERN = re.compile(r"[0-9a-f]{12}", re.ASCII)


# What result_stamp writes: "TYPE:count" pairs, then ";" and 16 hex digits of the labels' digest.
RESULT_STAMP_PATTERN = re.compile(r"(?:[^:,;]{1,64}:\d{1,9}(?:,[^:,;]{1,64}:\d{1,9})*)?;[0-9a-f]{16}",
                                  re.ASCII)


def read_result_stamp(stamp):
    """The type counts a result_stamp holds ({} for one that cannot be read)."""
    counts, _, _ = (stamp or "").rpartition(";")
    try:
        return {name: int(n) for name, n in (part.rsplit(":", 1) for part in counts.split(",") if part)}
    except ValueError:
        return {}


@dataclass
class FormulaRow:
    name: str
    count: int
    percent: float | None  # None with no leukocyte counted: no share of nothing is 0% or 100%
    low: float | None  # 95% range of the percentage (exact binomial)
    high: float | None

    @classmethod
    def rows(cls, counts, total):
        """One row per (name, count), each percentage rounded on its own (_percent)."""
        if not total:
            return [cls(name, count, None, None, None) for name, count in counts]
        return [cls(name, count, _percent(count, total), *exact_binomial_interval(count, total))
                for name, count in counts]

    @property
    def range_width(self):
        return 0.0 if self.percent is None else self.high - self.low

    def as_dict(self):
        return {"count": self.count, "percent": self.percent,
                "range_95": None if self.percent is None else [self.low, self.high]}


@dataclass
class PerHundredRow:
    """A count reported per 100 leukocytes beside the differential (NRBC, smudge cells)."""

    name: str
    reported_as: str  # as reports print it
    code: str  # its key in the CSV and the API
    count: int
    per_100: float | None  # per 100 leukocytes of the differential; None when there are none

    def as_dict(self):
        return {"type": self.name, "count": self.count, "per_100_leukocytes": self.per_100}


@dataclass
class LeukocyteFormula:
    """A sample's differential and what is reported beside it, by the rules of webapp.counting."""

    total: int = 0  # leukocytes in the differential
    rows: list = field(default_factory=list)  # FormulaRow per leukocyte type, each rounded alone
    groups: list = field(default_factory=list)  # mononuclear / polynuclear, its own table
    reviewed: int = 0
    awaiting_review: int = 0
    per_100: list = field(default_factory=list)  # PerHundredRow: erythroblasts (NRBC), smudge cells
    listed_apart: list = field(default_factory=list)  # (type, count): platelets, artefacts
    unidentified: int = 0  # cells a reviewer could not name: sign-off waits on them
    partial_left_out: int = 0  # cells cut by the photograph's edge, not counted in
    model_versions: list = field(default_factory=list)  # ids of the versions whose calls it counts
    scored_cells: int = 0  # cells the detector found with an out-of-distribution score (JUDGED)
    unfamiliar_cells: int = 0  # of them, those unlike the network's training cells (score above 1)
    # Cells a network without the score called (a version trained before there was one): nothing
    # flags such a cell for being of a type the network was never taught.
    unscored_cells: int = 0
    manual_differential_count = MANUAL_DIFFERENTIAL_COUNT

    def as_dict(self):
        return {
            "total": self.total,
            "reviewed": self.reviewed,
            "awaiting_review": self.awaiting_review,
            "artefacts": self.artefacts,
            "below_manual_count": self.below_manual_count,
            "model_versions": self.model_versions,
            "types": {row.name: row.as_dict() for row in self.rows},
            "groups": {row.name: row.as_dict() for row in self.groups},
            "per_100_leukocytes": {row.code: row.as_dict() for row in self.per_100},
            "listed_apart": dict(self.listed_apart),
            "unidentified": self.unidentified,
            "partial_left_out": self.partial_left_out,
            "scored_cells": self.scored_cells,
            "unfamiliar_cells": self.unfamiliar_cells,
            "unscored_cells": self.unscored_cells,
            "mostly_unfamiliar": self.mostly_unfamiliar,
        }

    @property
    def artefacts(self):
        return dict(self.listed_apart).get(Cell.ARTEFACT, 0)

    @property
    def not_counted(self):
        """Detections found but outside the differential and its per-100 figures."""
        return sum(count for _, count in self.listed_apart) + self.unidentified

    @property
    def mixed_versions(self):
        """Photographs of the sample were classified by different networks: one formula should
        come from one network, so the page asks for the sample to be re-classified."""
        return len(self.model_versions) > 1

    @property
    def below_manual_count(self):
        """Fewer cells than a manual differential counts: the percentages are imprecise."""
        return 0 < self.total < MANUAL_DIFFERENTIAL_COUNT

    @property
    def mostly_unfamiliar(self):
        """Most of the sample's cells are unlike those its network was trained on: a lab, stain or
        camera it does not know, where a single-cell photograph's own warning is not raised."""
        return mostly_unfamiliar(self.unfamiliar_cells, self.scored_cells)


def _percent(count, total):
    """100 * count / total to one decimal, halves up, in integers (a float's 0.05 may fall either
    side). Each share is rounded on its own, so that one count reads one percentage wherever it is
    shown (a type, a group, two types of equal count): the column may then add up to a few tenths
    more or less than 100, as an analyser's does, which the formula's note says."""
    return (2000 * count + total) // (2 * total) / 10 if total else 0.0


def leukocyte_formula(sample):
    """The sample's differential, per-100 figures and left-out detections, reviewers' labels first.

    `cell_type` already holds the reviewed label where a technologist corrected the network. How
    each type counts is webapp.counting's rule; cells the photograph's edge cuts count only where
    a reviewer counted them in.
    """
    cells = current_cells(sample)
    per_type = dict(
        cells.exclude(EDGE_LEFT_OUT).values_list("cell_type").annotate(n=Count("id")).order_by()
    )
    flags = cells.aggregate(
        reviewed=Count("id", filter=~Q(corrected_type="")),
        awaiting=Count("id", filter=AWAITING_REVIEW),
        partial=Count("id", filter=EDGE_LEFT_OUT),
        scored=Count("id", filter=JUDGED),
        unscored=Count("id", filter=Q(ood_score__isnull=True)),
        unfamiliar=Count("id", filter=JUDGED & Q(ood_score__gt=UNFAMILIAR_ABOVE)),
    )
    versions = sorted(
        sample.images.exclude(model_version=None).values_list("model_version_id", flat=True)
        .order_by().distinct()
    )
    network_types = {name for names in class_names_by_version(versions).values() for name in names}
    # An amended result reports again each type the signature it replaces reported, at zero if none
    # is left: the row gone would read, to an LIS, as the old figure still standing.
    reported_before = set((sample.previously_signed_figures or {}).get("types", {}))
    differential = {name: n for name, n in per_type.items()
                    if counting_of(name) is Counting.DIFFERENTIAL}
    total = sum(differential.values())
    per_100 = [
        PerHundredRow(name, rule_for(name).reported_as, rule_for(name).export_code, per_type.get(name, 0),
                      _percent(per_type.get(name, 0), total) if total else None)
        for name in sorted(RULES, key=type_order)
        if counting_of(name) is Counting.PER_100_LEUKOCYTES
        and (per_type.get(name) or name in network_types or name in reported_before)
    ]
    listed_apart = [(name, per_type[name]) for name in sorted(per_type, key=type_order)
                    if counting_of(name) is Counting.LISTED_APART]
    unidentified = sum(n for name, n in per_type.items() if counting_of(name) is Counting.UNRESOLVED)
    grouped = dict.fromkeys(BINARY_CLASSES, 0)
    for name, count in differential.items():
        if group_of(name):
            grouped[group_of(name)] += count
    groups = FormulaRow.rows(list(grouped.items()), total)
    extras = dict(reviewed=flags["reviewed"], awaiting_review=flags["awaiting"], per_100=per_100,
                  listed_apart=listed_apart, unidentified=unidentified,
                  partial_left_out=flags["partial"], model_versions=versions,
                  scored_cells=flags["scored"], unfamiliar_cells=flags["unfamiliar"],
                  unscored_cells=flags["unscored"])
    ungrouped = set(differential) - set(BINARY_CLASSES)
    if differential and (not ungrouped or (network_types and network_types <= set(BINARY_CLASSES)
                                           and not any(group_of(name) for name in ungrouped))):
        # A binary model's formula is the mononuclear / polynuclear split itself, with the
        # leukocytes a reviewer named that belong to neither group (a blast) beside it.
        counts = {**grouped, **{name: differential[name] for name in ungrouped},
                  **{name: 0 for name in reported_before - set(differential) - set(grouped)
                     if counting_of(name) is Counting.DIFFERENTIAL and not group_of(name)}}
        rows = FormulaRow.rows([(name, counts[name]) for name in sorted(counts, key=type_order)], total)
        return LeukocyteFormula(total, rows, [], **extras)
    # A formula lists every leukocyte type its network names, zeros included, as a lab report
    # does. Cells a binary network called (a sample classified by two networks) count in the
    # groups alone.
    named = {name for name in network_types | set(FOUR_CLASSES) | reported_before
             if counting_of(name) is Counting.DIFFERENTIAL}
    names = sorted((set(differential) | named) - set(BINARY_CLASSES), key=type_order)
    rows = FormulaRow.rows([(name, differential.get(name, 0)) for name in names], total)
    return LeukocyteFormula(total, rows, groups, **extras)


def result_figures(formula):
    """What a signature certifies, as it is kept with it (Sample.signed_figures): the leukocytes
    counted and each reported type's count with its percentage or figure per 100 leukocytes."""
    types = {row.name: {"count": row.count, "percent": row.percent} for row in formula.rows}
    types.update({row.name: {"count": row.count, "per_100": row.per_100} for row in formula.per_100})
    return {"total": formula.total, "types": types}


def figure_changes(before, after):
    """The reported figures that differ between two result_figures, in the report's type order:
    (type, before, after, unit), each figure a number or None (not reported, or no leukocyte)."""
    old, new = (before or {}).get("types", {}), (after or {}).get("types", {})
    changes = []
    for name in sorted(set(old) | set(new), key=type_order):
        unit = "per_100" if "per_100" in old.get(name, new.get(name, {})) else "percent"
        was, now = old.get(name, {}).get(unit), new.get(name, {}).get(unit)
        if was != now:
            changes.append((name, was, now, unit))
    return changes


@dataclass
class Agreement:
    """How many reviewed calls the reviewers kept, with the 95% range of that share."""

    reviewed: int = 0
    kept: int = 0

    @property
    def percent(self):
        return _percent(self.kept, self.reviewed)

    @property
    def range_95(self):
        return wilson_interval(self.kept, self.reviewed)


@dataclass
class ReviewAgreement:
    """What reviewers said about one model version's calls, on the cells they reviewed.

    Leukocytes only: a cell marked artefact was a detection fault, not a wrong type, and is counted
    apart. Flagged and unflagged calls are kept apart because staff review flagged cells first:
    the reviewed cells are no random sample, and the unflagged ones come closest to one.
    """

    overall: Agreement
    flagged: Agreement
    unflagged: Agreement
    artefacts: int
    predicted_types: list
    reviewer_types: list
    matrix: list  # rows: the network's call, columns: the reviewer's type

    @property
    def matrix_rows(self):
        """(network's type, [(count, the reviewer kept it), ...]) per row, for the page."""
        rows = []
        for name, row in zip(self.predicted_types, self.matrix, strict=True):
            cells = zip(row, self.reviewer_types, strict=True)
            rows.append((name, [(n, n > 0 and column == name) for n, column in cells]))
        return rows


def review_agreement(version):
    pairs = (
        Cell.objects.filter(model_version=version, review_carried_from__isnull=True)
        .exclude(corrected_type="")
        .values_list("predicted_type", "corrected_type", "needs_review").annotate(n=Count("id")).order_by()
    )
    overall, flagged, unflagged = Agreement(), Agreement(), Agreement()
    predicted_types = list(version.class_names or [])
    reviewer_types = review_types(predicted_types)
    counts, artefacts = {}, 0
    for predicted, corrected, needs_review, n in pairs:
        counts[predicted, corrected] = counts.get((predicted, corrected), 0) + n
        # Types outside today's lists (a label an older form of the site allowed) are shown, not lost.
        if predicted not in predicted_types:
            predicted_types.append(predicted)
        if corrected not in reviewer_types:
            reviewer_types.append(corrected)
        if corrected == Cell.ARTEFACT:
            artefacts += n
            continue
        for agreement in (overall, flagged if needs_review else unflagged):
            agreement.reviewed += n
            agreement.kept += n if corrected == predicted else 0
    # The network's own types, and of the many a reviewer may give, those reviewers gave.
    given = {corrected for _, corrected in counts}
    reviewer_types = [name for name in reviewer_types if name in predicted_types or name in given]
    matrix = [[counts.get((row, column), 0) for column in reviewer_types] for row in predicted_types]
    return ReviewAgreement(overall, flagged, unflagged, artefacts, predicted_types, reviewer_types, matrix)


def review_agreement_by_version():
    """Version id -> Agreement over its reviewed leukocytes, for the list of versions."""
    # Labels carried from another version's call were never a verdict on this version's.
    reviewed = ~Q(corrected_type="") & ~Q(corrected_type=Cell.ARTEFACT) & Q(review_carried_from__isnull=True)
    # Filtered before grouping, so that the cell_own_reviews_by_version index alone answers.
    rows = (
        Cell.objects.filter(reviewed).values("model_version")
        .annotate(reviewed=Count("id"), kept=Count("id", filter=Q(corrected_type=F("predicted_type"))))
        .order_by()
    )
    return {row["model_version"]: Agreement(row["reviewed"], row["kept"]) for row in rows}


@dataclass
class HistoryFilters:
    cell_type: str = ""
    confidence_min: float | None = None  # 0..1
    confidence_max: float | None = None
    reviewed: str = ""  # "yes" / "no" / ""
    needs_review: str = ""
    accession: str = ""
    date_from: object = None
    date_to: object = None
    model_version: int | None = None
    # "": the calls the formulas count (each image's latest version); "all": superseded ones too.
    calls: str = ""
    # "detector", "hand" (added_by_hand) or "middle" (not outlined); "": any.
    found: str = ""


# How a cell came to be, as the history's "Found" filter reads it.
FOUND = {"detector": Q(added_by_hand=False, outlined=True), "hand": Q(added_by_hand=True),
         "middle": Q(outlined=False)}


def _day_start(day):
    return timezone.make_aware(datetime.combine(day, time.min))


def cell_history(filters=None):
    """Every classified cell, newest first, narrowed by the filters."""
    filters = filters or HistoryFilters()
    cells = Cell.objects if filters.calls == "all" else current_cells()
    # The page's samples are read apart: joined in, they let SQLite drive the query from the
    # samples table and sort every cell (130 ms a page on 100,000 cells, bench/web.py) where the
    # newest-first index gives a page at once.
    cells = cells.select_related("image").only(*HISTORY_CELL_FIELDS).prefetch_related(
        Prefetch("image__sample", queryset=Sample.objects.only("id", "accession_number", "status")))
    if filters.cell_type:
        # A group is every type in it, as the formula's grouped rows count them: on its own name it
        # found the binary network's calls alone, never an eight-type network's lymphocytes.
        cells = cells.filter(cell_type__in=group_members(filters.cell_type) or [filters.cell_type])
    if filters.confidence_min is not None or filters.confidence_max is not None:
        # Measured on 100,000 cells (bench/web.py): given a confidence range, SQLite walks the
        # confidence index and sorts thousands of rows (135 ms); walking the newest-first indexes
        # and checking confidence row by row stops after one page (20 ms). "+ 0" hides the column
        # from the planner's index choice without changing the filter.
        cells = cells.alias(confidence_value=F("confidence") + 0.0)
    if filters.confidence_min is not None:
        cells = cells.filter(confidence_value__gte=filters.confidence_min)
    if filters.confidence_max is not None:
        cells = cells.filter(confidence_value__lte=filters.confidence_max)
    if filters.reviewed == "yes":
        cells = cells.exclude(corrected_type="")
    elif filters.reviewed == "no":
        cells = cells.filter(corrected_type="")
    if filters.needs_review == "yes":
        cells = cells.filter(needs_review=True)
    elif filters.needs_review == "no":
        cells = cells.filter(needs_review=False)
    if filters.accession:
        cells = cells.filter(image__sample__accession_number__iexact=typed_accession(filters.accession))
    if filters.date_from:
        cells = cells.filter(created_at__gte=_day_start(filters.date_from))
    if filters.date_to and filters.date_to < date.max:  # no day follows date.max: no upper bound
        cells = cells.filter(created_at__lt=_day_start(filters.date_to) + timezone.timedelta(days=1))
    if filters.model_version:
        cells = cells.filter(model_version_id=filters.model_version)
        # A version that served in the past has only old cells, and the planner, taking its cells for
        # spread over the year, walks the newest-first index from today: 1.9 million rows passed over
        # for a page of the four-type network's (0.9 s on PostgreSQL, bench/scale.py). Starting the
        # walk at that version's newest cell, which its own index gives at once, finds a page there.
        newest = Cell.objects.filter(model_version_id=filters.model_version).aggregate(
            newest=Max("created_at"))["newest"]
        cells = cells.filter(created_at__lte=newest) if newest else cells.none()
    if found := FOUND.get(filters.found):
        cells = cells.filter(found)
    return cells.order_by("-created_at", "-id")


class CappedPaginator(Paginator):
    """A Paginator that stops counting at a cap: COUNT(*) over 100,000 filtered rows costs more than
    the page itself, and nobody pages to the 2,000th page of a history."""

    def __init__(self, object_list, per_page, cap=None, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.cap = HISTORY_COUNT_CAP if cap is None else cap

    @cached_property
    def count(self):
        # Counting needs neither the joins select_related adds nor the ordering.
        return self.object_list.order_by().values("pk")[: self.cap + 1].count()

    @property
    def capped(self):
        return self.count > self.cap

    def validate_number(self, number):
        # Past the cap the last page counted is not the list's last: any page from 1 may hold rows.
        try:
            return super().validate_number(number)
        except EmptyPage:
            if not self.capped or int(number) < 1:
                raise
            return int(number)

    def page(self, number):
        """A page; from the last page the cap counted on, the rows there are, one more read to know
        whether another page follows: the oldest rows of a long history stay reachable."""
        number = self.validate_number(number)
        if not self.capped or number < self.num_pages:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom:bottom + self.per_page + 1])
        if not rows:
            raise EmptyPage(self.error_messages["no_results"])
        return PageBeyondCount(rows[:self.per_page], number, self, bottom, more=len(rows) > self.per_page)


class PageBeyondCount(Page):
    """A page of a CappedPaginator at or past where it stopped counting."""

    def __init__(self, object_list, number, paginator, bottom, more):
        super().__init__(object_list, number, paginator)
        self.bottom, self.more = bottom, more

    def has_next(self):
        return self.more

    def start_index(self):
        return self.bottom + 1

    def end_index(self):
        return self.bottom + len(self.object_list)


def history_page(filters, page_number, per_page=48):
    return CappedPaginator(cell_history(filters), per_page).get_page(page_number)


# --- model versions ------------------------------------------------------------------------------


def model_versions():
    """Model versions without their stored networks: those are megabytes each, never needed to
    draw a page."""
    return ModelVersion.objects.defer("model_bytes").select_related("created_by")


def count_per_row(related, link):
    """An annotation: how many ``related`` rows (a model) name each row through ``link`` (their
    foreign key to it). A correlated count, answered by that key's index for the rows a query
    returns alone: counted by a join grouped with the rows, every related row is read first (all
    2.5 million cells for seven versions' counts, 1.6 s on PostgreSQL; 0.2 s counted so)."""
    counted = (related.objects.filter(**{link: OuterRef("pk")}).order_by().values(link)
               .annotate(n=Count("*")).values("n"))
    return Coalesce(Subquery(counted), 0)


def serving_and_training_versions():
    """(the version that classifies new photographs, the one training now), each None where none."""
    versions = {version.status: version for version in model_versions().filter(
        status__in=(ModelVersion.Status.ACTIVE, ModelVersion.Status.TRAINING)).order_by("pk")}
    return versions.get(ModelVersion.Status.ACTIVE), versions.get(ModelVersion.Status.TRAINING)


def model_versions_with_cell_counts():
    """Every version, newest first, each with how many cells it classified (`cell_count`)."""
    return model_versions().annotate(cell_count=count_per_row(Cell, "model_version")).order_by("-pk")


def photographs_held_elsewhere(sample, image_ids=None):
    """{image id: [accession numbers, oldest sample first]} of the sample's photographs (those of
    ``image_ids`` where given) that other samples hold too: the same stored file, or the same field
    in another file, re-encoded, turned or mirrored (webapp.intake.same_field). The fingerprints'
    indexed bands find the candidates; one query per HELD_ELSEWHERE_BATCH photographs."""
    return _with_accession_numbers(_holders_elsewhere(sample, image_ids))


def _holders_elsewhere(sample, image_ids=None):
    """photographs_held_elsewhere, with the other samples' ids in place of their numbers."""
    images = sample.images.all() if image_ids is None else sample.images.filter(pk__in=image_ids)
    mine = [(pk, checksum, [print_ for print_ in (fingerprint, *turned) if print_])
            for pk, checksum, fingerprint, turned
            in images.values_list("pk", "checksum", "fingerprint", "turned_fingerprints")]
    held = {}
    for start in range(0, len(mine), HELD_ELSEWHERE_BATCH):
        batch = mine[start:start + HELD_ELSEWHERE_BATCH]
        keys = {key for _, _, orientations in batch
                for print_ in orientations for key in fingerprint_bands(print_)}
        near = FingerprintBand.objects.filter(key__in=keys).values("image_id")
        checksums = {checksum for _, checksum, _ in batch}
        others = HeldPhotographs(SmearImage.objects.exclude(sample=sample)
                                 .filter(Q(checksum__in=checksums) | Q(pk__in=near))
                                 .order_by("sample__created_at", "pk")
                                 .values_list("checksum", "fingerprint", "sample_id"))
        for pk, checksum, orientations in batch:
            # Each photograph against the candidates sharing a band with it, not against every one:
            # the whole batch against every candidate took 0.8 s a hundred photographs.
            holders = others.holders(checksum, orientations)
            if holders:
                held[pk] = list(dict.fromkeys(holders))
    return held


def _with_accession_numbers(held):
    """{image id: [sample ids]} as {image id: [their accession numbers, now]}."""
    numbers = dict(Sample.objects.filter(pk__in={pk for ids in held.values() for pk in ids})
                   .values_list("pk", "accession_number"))
    return {image: [numbers[pk] for pk in ids if pk in numbers] for image, ids in held.items()}


def photographs_held_elsewhere_kept(sample):
    """photographs_held_elsewhere(sample) for the whole sample, the search kept in the cache until a
    photograph is stored or deleted anywhere (the photographs' count and last id name the
    generation: ids are never reused). It keeps the other samples' ids, and their accession numbers
    are read at each call, so a number corrected since is the one shown. The sign-off panel is drawn
    after every review and poll, and the search costs about 2 ms a photograph: a 4,750-photograph
    sample's took 6 s."""
    generation = SmearImage.objects.aggregate(count=Count("pk"), last=Max("pk"))
    key = (f"held-elsewhere:{sample.pk}:{sample.created_at.timestamp()}:{generation['count']}:"
           f"{generation['last']}")
    held = cache.get(key)
    if held is None:
        held = _holders_elsewhere(sample)
        cache.set(key, held, timeout=6 * 3600)
    return _with_accession_numbers(held)


def active_version_id():
    """The id of the version that classifies new samples, or None."""
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list("pk", flat=True).first()


def ever_active_version_ids():
    return set(ModelActivation.objects.values_list("version_id", flat=True))


def recent_activations(limit=50):
    # Only ids of the versions are shown: joining them would load every stored network.
    return ModelActivation.objects.select_related("activated_by")[:limit]


def activations_of(version):
    return version.activations.select_related("activated_by")


# --- stored files --------------------------------------------------------------------------------


def _cell_file_names(cells):
    names = []
    for row in cells.values_list("crop", "window", "heatmap"):
        names.extend(name for name in row if name)
    return names


def sample_file_names(sample):
    """Every stored file of a sample: photographs, and each cell's crop, window and heatmap."""
    names = list(sample.images.exclude(image="").values_list("image", flat=True))
    return names + _cell_file_names(Cell.objects.filter(image__sample=sample))


def image_file_names(image):
    """Every stored file of one photograph: itself, and each of its cells' crop, window and heatmap."""
    return ([image.image.name] if image.image else []) + _cell_file_names(image.cells.all())


# --- work that no live task will finish (see services/liveness.py for claims and heartbeats) ---


def worker_lost_cutoff(now=None):
    """Heartbeats older than this come from a worker that has stopped."""
    return (now or timezone.now()) - timedelta(seconds=settings.WORKER_LOST_AFTER)


def queued_stuck_cutoff(now=None):
    return (now or timezone.now()) - timedelta(seconds=settings.QUEUED_STUCK_AFTER)


def silent_heartbeat(now=None):
    """Records whose worker stopped writing its heartbeat (or never wrote one)."""
    return Q(heartbeat_at__lt=worker_lost_cutoff(now)) | Q(heartbeat_at__isnull=True)


def _processing_lost(now):
    # A claim writes the first heartbeat; none at all means the photograph was taken before
    # heartbeats existed, so the time it was queued says how old it is.
    cutoff = worker_lost_cutoff(now)
    return Q(status=SmearImage.Status.PROCESSING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, queued_at__lt=cutoff)
    )


def lost_images(now=None):
    """Photographs left processing by a worker that has stopped."""
    return SmearImage.objects.filter(_processing_lost(now or timezone.now()))


def unsent_photographs(images):
    """How many of these stored photographs wait unsent (the broker was down as they were stored)."""
    return SmearImage.objects.filter(pk__in=[image.pk for image in images], sent_at__isnull=True).count()


def stuck_images(now=None):
    """Photographs that no live task will finish unless someone sends them again: queued for
    longer than QUEUED_STUCK_AFTER, or processing by a worker that has stopped."""
    now = now or timezone.now()
    queued_long = Q(status=SmearImage.Status.QUEUED, queued_at__lt=queued_stuck_cutoff(now))
    return SmearImage.objects.filter(queued_long | _processing_lost(now))


def abandoned_trainings(now=None):
    """Versions in status training whose training process stopped sending its heartbeat."""
    claimed_and_silent = Q(heartbeat_at__lt=worker_lost_cutoff(now))
    # Started before heartbeats existed: "running" with none at all.
    running_without_heartbeat = Q(heartbeat_at__isnull=True, progress__state="running")
    return ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).filter(
        claimed_and_silent | running_without_heartbeat
    )


# --- the cell gallery and the formula's notes ----------------------------------------------------

GALLERY_FIELDS = (
    "id", "index", "crop", "predicted_type", "confidence", "needs_review", "corrected_type",
    "cell_type", "model_version", "image", "review_carried_from", "added_by_hand", "is_partial",
    "count_partial", "ood_score", "reviewed_at",
)


def gallery_cells(sample):
    """Every cell the sample's formula counts, with what its tile shows, in one query: by
    photograph and cell number (the gallery sorts them into rows)."""
    return list(current_cells(sample).only(*GALLERY_FIELDS).order_by("image_id", "index"))


def version_tasks(version_ids):
    """(id, task as people say it) per version, in id order: "Eight cell types"."""
    versions = ModelVersion.objects.filter(pk__in=list(version_ids)).only("pk", "task").order_by("pk")
    return [(version.pk, version.get_task_display()) for version in versions]


def sample_cells_by_ids(sample, cell_ids):
    """The sample's counted cells among these ids (others' and superseded calls left out)."""
    return list(current_cells(sample).filter(pk__in=list(cell_ids)).select_related("image")
                .only("id", "image__sample").order_by("pk"))
