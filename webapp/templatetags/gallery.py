"""The gallery's tiles, written here rather than in a template loop: Django's template engine took
~0.4 ms a tile, 200 ms for a 500-cell sample (bench/web.py). Every text is escaped here, once.

Each row's tiles are the options of a listbox of their own (templates/lab/gallery.html), one stop of
the Tab key: its first tile takes the focus (tabindex 0), the others are reached with the arrow keys
(a roving tabindex, kept by static/js/gallery.js). An option is named "Cell 3 on smear-12.jpg,
neutrophil" (the cell's name on the sample page, not its database id), with
what its marks show ("needs review", "reviewed", "at the edge, not counted"); gallery.js names a
tile again, in the same words, when a relabelling moves it to another row."""

from html import escape

from django import template
from django.utils.safestring import mark_safe

from webapp.counting import rule_for
from webapp.selectors import label_stamp

register = template.Library()

_TILE = ('<div class="{classes}" role="option" aria-selected="false" tabindex="{tabindex}" data-cell="{pk}" '
         'data-name="{cell_name}" data-call="{call}" data-image="{image}" data-index="{index}" '
         'data-seen="{seen}" '
         'aria-label="{name}" title="{title}">{picture}'
         '<span class="marks" aria-hidden="true"><i class="flag" title="Needs review">?</i>'
         '<i class="ok" title="Reviewed">✓</i>{edge}</span></div>')
# The option's name says what the picture is of; the picture itself adds nothing to it.
_PICTURE = '<img src="{url}" alt="" loading="lazy" width="80" height="80">'
_NO_PICTURE = '<span class="nocrop">no picture</span>'
_EDGE = '<i class="edge" title="Cut by the photograph&#x27;s edge: not counted">edge</i>'


def tile_name(cell_name, label, awaiting_review, reviewed, left_out):
    """A tile's accessible name, as gallery.js's tileName writes it."""
    parts = [cell_name, label.lower()]
    if awaiting_review:
        parts.append("needs review")
    if reviewed:
        parts.append("reviewed")
    if left_out:
        parts.append("at the edge, not counted")
    return ", ".join(parts)


def _tile(tile, tab_stop):
    cell = tile.cell
    classes = "gtile" + (" awaiting" if tile.awaiting_review else "") + (
        " reviewed" if tile.reviewed else "") + (" left-out" if tile.left_out else "")
    call = f"network: {rule_for(cell.predicted_type).label} {round(100 * cell.confidence)}%"
    notes = [tile.name, call]
    if tile.awaiting_review:
        notes.append("needs review")
    if tile.reviewed:
        notes.append("reviewed")
    if tile.left_out:
        notes.append("cut by the photograph's edge, not counted")
    name = tile_name(tile.name, rule_for(cell.cell_type).label, tile.awaiting_review, tile.reviewed,
                     tile.left_out)
    picture = _PICTURE.format(url=escape(tile.crop_url)) if tile.crop_url else _NO_PICTURE
    return _TILE.format(classes=classes, tabindex="0" if tab_stop else "-1", pk=cell.pk,
                        cell_name=escape(tile.name), call=escape(call), image=cell.image_id, index=cell.index,
                        seen=label_stamp(cell),
                        name=escape(name), title=escape(" · ".join(notes)),
                        picture=picture, edge=_EDGE if tile.left_out else "")


@register.simple_tag
def gallery_tiles(tiles):
    """A row's tiles (presenters.gallery.GalleryTile) as the gallery's markup, the first its Tab stop."""
    markup = "".join(_tile(tile, number == 0) for number, tile in enumerate(tiles))
    return mark_safe(markup)  # noqa: S308 - each part escaped above
