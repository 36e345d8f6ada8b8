"""The sign-off panel of the sample page, its audit timeline, and the status badges of the lists."""

import datetime
from dataclasses import dataclass, field

from django.utils import formats, timezone
from django.utils.dateparse import parse_datetime

from webapp.counting import type_label
from webapp.models import Sample, SmearImage
from webapp.presenters import ViewModel
from webapp.selectors import (
    SignOffFacts,
    cell_names,
    photographs_held_elsewhere_kept,
    result_stamp,
    sample_timeline,
    sign_off_facts,
    sign_off_facts_for,
    usernames,
)

WORKER = "the worker"  # an audit row without an actor: written outside any request


@dataclass
class StatusBadge:
    state: str  # in_progress / ready / signed / reopened
    words: str


def status_badges(sample_ids):
    """Sample id -> StatusBadge for the samples of a list page, in a few queries."""
    return {pk: StatusBadge(*facts.badge) for pk, facts in sign_off_facts_for(set(sample_ids)).items()}


@dataclass
class Change:
    field: str
    old: str
    new: str


@dataclass
class TimelineEntry:
    when: object
    who: str
    what: str
    changes: list = field(default_factory=list)  # Change


@dataclass
class SignOffPanel(ViewModel):
    sign_off: SignOffFacts
    badge: StatusBadge
    refusals: list  # selectors.Refusal
    leukocytes: int
    target_reached: bool
    may_sign: bool  # the person looking may sign and reopen
    below_target: bool  # the sign form asks for a reason
    show_keep_unidentified: bool
    target_choices: tuple
    timeline: list  # TimelineEntry, newest first
    timeline_total: int  # entries in the whole trail: more than are shown where it is long
    result_seen: str  # selectors.result_stamp: the sign form says which result it signs
    # Other samples holding one of this one's photographs (accession numbers), said beside the sign
    # form: the photograph page warns of each, and a field of another patient is a mix-up to catch.
    also_elsewhere: list = field(default_factory=list)
    photographs_also_elsewhere: int = 0
    reason_draft: str = ""  # what a refused sign form held, written in again
    keep_unidentified_draft: bool = False
    # The fields a refused signature was about (its Refusal codes: "below_target", "unidentified"),
    # marked invalid and described by the refusal that names them.
    refused: tuple = ()
    reason_refusal: bool = False  # the refusals list says why a reason is asked (below_target)
    unidentified_refusal: bool = False


def sign_off_panel(sample, may_sign, target_choices=(100, 200), timeline_limit=200, draft=None):
    facts = sign_off_facts(sample)
    leukocytes = facts.leukocytes  # the differential's count, as the formula's total
    refusals = facts.refusals() if sample.status != Sample.Status.SIGNED else []
    draft = draft or {}
    held = photographs_held_elsewhere_kept(sample) if not sample.is_signed else {}
    return SignOffPanel(
        sign_off=facts,
        badge=StatusBadge(*facts.badge),
        refusals=refusals,
        leukocytes=leukocytes,
        target_reached=leukocytes >= sample.target_count,
        may_sign=may_sign,
        below_target=leukocytes < sample.target_count,
        show_keep_unidentified=facts.unidentified > 0,
        # A target set before the lab's choices narrowed (LEUKOSCOPE_TARGET_COUNT of another value) is
        # shown as the sample's, not silently as the first choice.
        target_choices=tuple(sorted({*target_choices, sample.target_count})),
        timeline=(entries := timeline(sample.pk, timeline_limit)),
        timeline_total=timeline_length(sample.pk, entries, timeline_limit),
        result_seen=result_stamp(sample) if may_sign and not sample.is_signed else "",
        also_elsewhere=list(dict.fromkeys(number for numbers in held.values() for number in numbers)),
        photographs_also_elsewhere=len(held),
        reason_draft=draft.get("below_target_reason", ""),
        keep_unidentified_draft=bool(draft.get("keep_unidentified")),
        refused=tuple(draft.get("refused", ())),
        reason_refusal=any(refusal.code == "below_target" for refusal in refusals),
        unidentified_refusal=any(refusal.code == "unidentified" for refusal in refusals),
    )


# --- the audit timeline --------------------------------------------------------------------------

_EMPTY = {"None", "", "False", "0"}
# Where 0 is a value like any other: a box drawn from a photograph's left or top edge.
_COORDINATES = {"x0", "y0", "x1", "y1"}
_USER_FIELDS = {"signed_by", "reopened_by", "reviewed_by"}
_VERSION_FIELDS = {"model_version", "requested_version"}
_TYPE_FIELDS = {"cell_type", "corrected_type", "predicted_type", "from_type", "to_type", "first_look_type"}
_STATUS_WORDS = {**dict(Sample.Status.choices), **dict(SmearImage.Status.choices)}
_LABELS = {"model_version": "model version", "requested_version": "queued for version",
           "cell_type": "type", "corrected_type": "reviewer's type", "from_type": "from",
           "to_type": "to", "original_filename": "file"}


def _shown(name, value, names):
    if value == "None":
        return ""
    if name in _USER_FIELDS:
        return names.get(value, value)
    if name in _VERSION_FIELDS and value.isdigit():
        return f"v{value}"
    if name == "status":
        return _STATUS_WORDS.get(value, value)
    if name in _TYPE_FIELDS and value:
        return type_label(value)  # "Immature granulocyte", as every page names it
    if name.endswith("_at") and (moment := parse_datetime(value)) is not None:
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, datetime.UTC)  # stored in UTC (USE_TZ)
        return formats.date_format(timezone.localtime(moment), "Y-m-d H:i:s T")
    return value


def _in_field_order(entry):
    """The entry's changes in its model's field order: PostgreSQL's jsonb keeps no key order, so
    the stored order would differ between databases. Words that are no field come after, by name."""
    model = entry.content_type.model_class() if entry.content_type_id else None
    order = {field.name: i for i, field in enumerate(model._meta.fields)} if model else {}
    return sorted((entry.changes or {}).items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


def _changes(entry, created, names):
    shown = []
    for name, pair in _in_field_order(entry):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            continue
        old, new = (str(value) for value in pair)
        if old == new or (created and new in _EMPTY and not (name in _COORDINATES and new == "0")):
            continue
        shown.append(Change(_LABELS.get(name, name.replace("_", " ")), _shown(name, old, names),
                            _shown(name, new, names)))
    return shown


def _what(entry, model, changes, cells):
    data = entry.additional_data or {}
    # As the sample page numbers it, where it still shows the cell; its database id otherwise.
    cell = cells.get(_cell_id(data)) or f"Cell {data.get('cell_id', '')}"
    if data.get("note"):
        return data["note"][0].upper() + data["note"][1:]
    action = entry.get_action_display().lower()
    new = {name: pair[1] for name, pair in (entry.changes or {}).items()
           if isinstance(pair, list | tuple) and len(pair) == 2}
    if model == "sample":
        status = new.get("status")
        if entry.action == entry.Action.CREATE:
            return f"Sample {entry.object_repr} received"
        if status == Sample.Status.SIGNED:
            return "Signed"
        if status == Sample.Status.REOPENED:
            return "Reopened"
        if "target_count" in new:
            return f"Target count set to {new['target_count']}"
        return f"Sample {action}"
    if model == "smearimage":
        if entry.action == entry.Action.CREATE:
            return f"Photograph {new.get('original_filename') or entry.object_repr} uploaded"
        return f"Photograph {entry.object_repr} {action}"
    if model == "cellreview":
        # A reviewer who gives a cell the type it already had confirms it; nothing was relabelled.
        done = "confirmed" if new.get("from_type") == new.get("to_type") else "relabelled"
        return f"{cell} {done}"
    if model == "cell":
        if entry.action == entry.Action.CREATE:
            by_hand = new.get("added_by_hand") == "True"
            return f"{cell} added{' by hand' if by_hand else ''}"
        if "count_partial" in new:  # an edge cell a reviewer counted in, or left out again
            return f"{cell} {'counted in' if new['count_partial'] == 'True' else 'left out of'} the formula"
        return f"{cell} {action}"
    return f"{entry.object_repr} {action}"


def _cell_id(data):
    value = data.get("cell_id")
    return int(value) if str(value).isdigit() else None


def timeline_length(sample_id, shown, limit):
    """How many entries the sample's whole trail holds, counted only where ``shown`` (its newest,
    up to ``limit``) may not be all of them."""
    return sample_timeline(sample_id).count() if len(shown) >= limit else len(shown)


def timeline(sample_id, limit=200):
    return timeline_entries(list(sample_timeline(sample_id)[:limit]))


def timeline_entries(rows):
    """The trail's audit rows (LogEntry, newest first) as TimelineEntry, in a fixed number of
    queries: a page of the whole trail, or the panel's newest."""
    names = usernames({str(value) for entry in rows for name, pair in (entry.changes or {}).items()
                       if name in _USER_FIELDS and isinstance(pair, list | tuple) for value in pair})
    cells = cell_names({_cell_id(entry.additional_data or {}) for entry in rows} - {None})
    entries = []
    for entry in rows:
        model = entry.content_type.model if entry.content_type_id else ""
        created = entry.action == entry.Action.CREATE
        changes = _changes(entry, created, names)
        if model == "cell" and "count_partial" in (entry.changes or {}):
            changes = [change for change in changes if change.field != "count partial"]  # said in words
        who = entry.actor.get_username() if entry.actor else WORKER
        entries.append(TimelineEntry(entry.timestamp, who, _what(entry, model, changes, cells), changes))
    return entries
