"""A cell's type buttons on the sample page, written here rather than in a template loop: each of a
500-cell sample's rows holds up to sixteen buttons, and Django's template engine spent most of the
page's time on them (bench/web.py, "sample page, 500 cells"). Every text is escaped here, once.
Called by templatetags/sample_cells.py, which writes each row; no template loads it."""

from functools import lru_cache
from html import escape

from django.utils.safestring import mark_safe

from webapp.counting import type_label

# The visible text is the type's shortcut letter; the accessible name is the type's name, the
# letter is offered to assistive technology as a key shortcut, and aria-pressed says which type the
# cell has now (whether a reviewer confirmed it is in the title, read as the button's description).
_BUTTON = ('<button type="submit" name="cell_type" value="{name}" class="{classes}" title="{title}" '
           'aria-label="{label}" aria-pressed="{pressed}"{shortcut} data-key="{key}">{text}</button>')


def _attribute(text):
    """Escaped for a double-quoted attribute; an apostrophe, harmless there, stays one."""
    return escape(text, quote=False).replace('"', "&quot;")


@lru_cache(maxsize=256)
def _buttons(review_types, cell_type, confirmed):
    buttons = []
    for name, key in review_types:
        current = name == cell_type
        classes = f"typebtn t-{name.lower()}" + (
            f" current {'confirmed' if confirmed else 'unconfirmed'}" if current else "")
        label = type_label(name)
        title = "Not a white cell: left out of the formula" if name == "ARTEFACT" else label
        if key and key.lower() not in label.lower():
            # The name holds the letter shown (Platelet's G), so that a voice user saying it is heard.
            label += f" ({key})"
        if key:
            title += f" (key {key})"
        if current:
            title += ": confirmed by a reviewer" if confirmed else ": the network's call, not yet confirmed"
        buttons.append(_BUTTON.format(name=_attribute(name), classes=_attribute(classes),
                                      title=_attribute(title), label=_attribute(label),
                                      pressed="true" if current else "false",
                                      shortcut=f' aria-keyshortcuts="{_attribute(key)}"' if key else "",
                                      key=_attribute(key),
                                      text=escape((key or name)[:3])))
    return "".join(buttons)


def review_buttons(review_types, cell):
    """The buttons that set a cell's type, its current one marked confirmed or not yet."""
    markup = _buttons(tuple(map(tuple, review_types)), cell.cell_type, bool(cell.corrected_type))
    return mark_safe(markup)  # noqa: S308 - each part escaped above
