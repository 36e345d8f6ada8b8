"""The audit trail: who changed what on a sample, when, from what, to what (django-auditlog).

Sample, SmearImage, Cell and CellReview are registered with the fields that make the trail
meaningful; each row carries its sample's id in `additional_data` (the models'
`get_additional_data`), so a sample's timeline is one query (selectors.sample_timeline). Signals
write rows for what goes through `save()` and `delete()`: an upload, a review, a sign-off, a
reopening, a target count, a cell added by hand. What goes through bulk queries, or would write
hundreds of rows, is recorded here instead, one row for the whole: a classified photograph ("classified by v3:
37 cells", the worker creating its cells with auditlog off), a re-classification or a "Try
again", a deletion with everything it takes along. The worker has no request: its rows have no
actor, shown as "the worker". A re-classification writes its row a sample in bulk (`record_all`,
the same rows), under every sample's row lock.

webapp.models registers its records here as it defines them (auditlog's own way): this module
imports no model of ours.
"""

import os
import pwd

from auditlog import get_logentry_model
from auditlog.cid import get_cid
from auditlog.context import disable_auditlog
from auditlog.diff import model_instance_diff
from auditlog.registry import auditlog
from django.contrib.contenttypes.models import ContentType
from django.db.models.signals import pre_save
from django.utils.encoding import smart_str

__all__ = ["command_line_actor", "create_all_as", "disable_auditlog", "os_user", "record", "record_all",
           "register_models", "save_as"]

AUDITED_FIELDS = {
    "Sample": ["accession_number", "note", "status", "target_count", "signed_by", "signed_at",
               "below_target_reason", "unidentified_kept", "times_signed", "reopened_by",
               "reopened_at", "reopen_reason"],
    "SmearImage": ["original_filename", "status", "error", "model_version", "requested_version"],
    "Cell": ["cell_type", "corrected_type", "count_partial", "is_partial", "added_by_hand", "x0", "y0",
             "x1", "y1"],
    "CellReview": ["from_type", "to_type", "reviewed_by"],
}


def register_models(*models):
    """Register the lab's records with django-auditlog, each with its fields of AUDITED_FIELDS."""
    for model in models:
        if not auditlog.contains(model):
            auditlog.register(model, include_fields=AUDITED_FIELDS[model.__name__])


def record(instance, action, changes, actor=None, note="", **extra):
    """One audit row written by hand for `instance`: `changes` maps a field or a word to
    (from, to); `note` says in a sentence what happened ("classified by v3: 37 cells"). Where no
    account acts, `extra` may say who did in words, as `who` (command_line_actor), which the
    trail's admin shows in place of an account.

    action: "create", "update" or "delete".
    """
    LogEntry = get_logentry_model()
    fields = _fields(action, changes, actor, note, extra, instance)
    return LogEntry.objects.log_create(instance, force_log=True, **fields)


def command_line_actor():
    """Who acts through a management command, in the trail's words: nobody signs in on the command
    line, so the operating-system account that ran it stands for the person ("command line (OS user
    ana)", or "command line (OS user root, through sudo by ana)")."""
    return f"command line (OS user {os_user()})"


def os_user():
    """The operating-system account running this process; its numeric id where the system has no
    name for it (a container's arbitrary user). Read from the account database by the process's
    id, not from LOGNAME or USER as getpass.getuser reads it: whoever runs a command sets those as
    they like, and `su` may leave the caller's there. A command run as root through sudo names the
    account that ran sudo too ("root, through sudo by ana"): root alone names nobody."""
    uid = os.getuid()
    sudo_uid = _sudo_caller_uid(uid)
    if sudo_uid is None:
        return _account_name(uid)
    return f"{_account_name(uid)}, through sudo by {_account_name(sudo_uid)}"


# uid_t is 32 bits on the systems this runs on: a larger SUDO_UID is none sudo wrote.
_LARGEST_UID = 2**32 - 1


def _sudo_caller_uid(uid):
    """The id of the account that ran sudo, where this process runs as root and sudo said so
    (SUDO_UID), else None. Read only in a process that runs as root: any other account can set
    SUDO_UID to pass for someone else, while root could write any row it likes anyway, and sudo
    sets the variable itself. Root through sudo by root adds nothing."""
    said = os.environ.get("SUDO_UID", "")
    # Ten digits at most before int(), which refuses thousands outright (a traceback, not a row).
    if uid != 0 or not said.isascii() or not said.isdigit() or len(said) > len(str(_LARGEST_UID)):
        return None
    caller = int(said)
    return caller if 0 < caller <= _LARGEST_UID else None


def _account_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"id {uid}"


def record_all(action, records, actor=None):
    """The rows record() writes, for many instances in a few INSERTs: a re-classification of every
    sample writes one a sample while it holds their row locks, and one query a row held them for
    seconds. ``records``: (instance, changes, note) each."""
    LogEntry = get_logentry_model()
    entries = []
    for instance, changes, note in records:
        # What log_create fills in itself, then the pre_save that auditlog's middleware listens on
        # (the request's address and port, its actor where none is given), which bulk_create skips.
        pk = instance.pk
        entry = LogEntry(
            content_type=ContentType.objects.get_for_model(instance), object_pk=pk,
            object_id=pk if isinstance(pk, int) else None, object_repr=smart_str(instance),
            serialized_data=LogEntry.objects._get_serialized_data_or_none(instance), cid=get_cid(),
            **_fields(action, changes, actor, note, {}, instance))
        pre_save.send(sender=LogEntry, instance=entry, raw=False, using=LogEntry.objects.db,
                      update_fields=None)
        entries.append(entry)
    return LogEntry.objects.bulk_create(entries, batch_size=1000)


def _fields(action, changes, actor, note, extra, instance):
    """The fields of record()'s row that are not log_create's own."""
    LogEntry = get_logentry_model()
    actions = {"create": LogEntry.Action.CREATE, "update": LogEntry.Action.UPDATE,
               "delete": LogEntry.Action.DELETE}
    # A record outside a sample's (an API key) carries no sample id.
    data = dict(getattr(instance, "get_additional_data", dict)(), **extra)
    if note:
        data["note"] = note
    return {"action": actions[action], "actor": _signed_in(actor), "additional_data": data,
            "changes": {key: [_text(old), _text(new)] for key, (old, new) in changes.items()}}


def save_as(instance, actor, update_fields=None):
    """Save `instance` and write its audit row with `actor` as the one who did it, request or not
    (a service that knows who acts: signing, reopening, a review), instead of leaving the actor to
    the request's middleware."""
    created = instance._state.adding
    old = None if created else type(instance).objects.filter(pk=instance.pk).first()
    with disable_auditlog():
        instance.save(update_fields=update_fields)
    _log_saved(instance, old, actor, created, fields=None if created else update_fields)
    return instance


def create_all_as(instances, actor):
    """Create new records of one model in one query, each with the audit row save_as would write
    for it (auditlog's own, so the request's address and correlation id are kept). Returns them."""
    if not instances:
        return []
    created = type(instances[0]).objects.bulk_create(instances)  # sends no signals: no rows yet
    for instance in created:
        _log_saved(instance, None, actor, created=True)
    return created


def _log_saved(instance, old, actor, created, fields=None):
    """The audit row of a save made with auditlog off: what changed from ``old``."""
    changes = model_instance_diff(old, instance, fields_to_check=fields)
    if changes:
        LogEntry = get_logentry_model()
        LogEntry.objects.log_create(
            instance, action=LogEntry.Action.CREATE if created else LogEntry.Action.UPDATE,
            changes=changes, actor=_signed_in(actor),
        )


def _signed_in(actor):
    return actor if actor is not None and actor.is_authenticated else None


def _text(value):
    return "None" if value is None else str(value)
