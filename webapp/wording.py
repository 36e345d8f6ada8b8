"""Words for what people read: counts ("1 photograph", "2 photographs", never "photograph(s)"), times
on a report, sizes ("25.1 MB"), a name typed right to left inside an English sentence."""

import math
import unicodedata

from django.utils import formats, timezone


def person(user):
    """How a report names an account: its full name, else its user name; "" for none."""
    if user is None:
        return ""
    return user.get_full_name() or user.get_username()


def count_of(n, noun, plural=None):
    """count_of(1, "cell") -> "1 cell"; count_of(3, "box", "boxes") -> "3 boxes"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


# Direction embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a file name they
# only disguise it. "x" RLO "gpj.exe" reads "xexe.jpg" on every page, in the CSV and in a spreadsheet.
DIRECTION_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def isolated(text):
    """``text`` set apart from the sentence around it (U+2068 FIRST STRONG ISOLATE ... U+2069 POP
    DIRECTIONAL ISOLATE, plain text's <bdi>) where it holds right-to-left letters: an Arabic file name
    in "NAME queued again." otherwise carries the words beside it along, in a message or a
    confirmation dialog, which cannot take markup. Any other text is left as it is, but for direction
    controls, dropped: a name an older release stored with them (an override runs on over the
    sentence, a PDI of its own closes the isolate early) would turn the words after it around."""
    text = text.translate(DIRECTION_CONTROLS)
    if any(unicodedata.bidirectional(char) in ("R", "AL") for char in text):
        return f"\u2068{text}\u2069"
    return text


def megabytes(size, rounding=math.floor):
    """A size in bytes as a person reads it: megabytes to a tenth ("25 MB", "25.1 MB", "1,024 MB"),
    kilobytes under one ("16 KB": a disk with no room is not "0 MB"). ``rounding`` is math.ceil for
    a file checked against a limit, so that one just over it never reads as the limit itself."""
    if size < 1024 * 1024:
        return f"{rounding(size / 1024):,} KB"
    return f"{rounding(size * 10 / (1024 * 1024)) / 10:,.1f}".removesuffix(".0") + " MB"


def superseded_call(cell):
    """Why a cell's call may not be changed: a later version classified its photograph again."""
    return (f"This is model v{cell.model_version_id}'s earlier call; the sample now counts "
            f"v{cell.image.model_version_id}'s call on this photograph.")


def awaiting_another_reading(action):
    """Why a cell may not be worked on while its photograph waits to be classified again by the same
    network (Cell.awaits_another_reading): ``action`` once it is done, as "relabel it"."""
    return ("Its photograph is queued to be classified again, and the cells that run finds replace "
            f"these, and work on a cell it does not find again would be lost with it: {action} once the "
            "photograph is done.")


def choose_again(sent, correct_first=True):
    """What a refused upload form says of the ``sent`` photographs a browser does not keep; where
    nothing in the form was wrong (``correct_first`` false), only to choose them again."""
    if not sent:
        return ""
    was, them = ("was", "it") if sent == 1 else ("were", "them")
    correct = "correct the form, then " if correct_first else ""
    return f"The {count_of(sent, 'photograph')} you chose {was} not stored: {correct}choose {them} again."


def moment_on_a_report(moment):
    """A time as a report that leaves the lab prints it: in the site's zone, with its abbreviation and,
    away from UTC, its offset ("2026-12-04 11:47 CET (UTC+01:00)"). An abbreviation alone is
    ambiguous once a report is read elsewhere: "IST" is Irish, Israeli or Indian time."""
    if not moment:  # None, or "" from a template variable that did not resolve, as |date takes it
        return ""
    local = timezone.localtime(moment)
    words = formats.date_format(local, "Y-m-d H:i T")
    offset = local.utcoffset()
    if not offset:
        return words
    if local.tzname()[:1] in "+-":
        # A zone with no abbreviation of its own (America/Sao_Paulo's is "-03"): the offset alone,
        # not "11:54 -03 (UTC-03:00)".
        words = formats.date_format(local, "Y-m-d H:i")
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{words} (UTC{sign}{hours:02d}:{minutes:02d})"
