"""The gallery's tiles, written here rather than in a template loop: Django's template engine took
~0.4 ms a tile, 200 ms for a 500-cell sample (bench/web.py). Every text is escaped here, once."""

from html import escape

from django import template
from django.utils.safestring import mark_safe

from webapp.counting import rule_for

register = template.Library()

_TILE = ('<div class="{classes}" role="option" aria-selected="false" tabindex="-1" data-cell="{pk}" '
         'data-image="{image}" data-index="{index}" title="{title}">{picture}<span class="marks">'
         '<i class="flag" title="Needs review">?</i><i class="ok" title="Reviewed">✓</i>{edge}'
         '</span></div>')
_PICTURE = '<img src="{url}" alt="Cell {pk}" loading="lazy" width="80" height="80">'
_NO_PICTURE = '<span class="nocrop">no picture</span>'
_EDGE = '<i class="edge" title="Cut by the photograph&#x27;s edge: not counted">edge</i>'


def _tile(tile):
    cell = tile.cell
    classes = "gtile" + (" awaiting" if tile.awaiting_review else "") + (
        " reviewed" if tile.reviewed else "") + (" left-out" if tile.left_out else "")
    notes = [f"Cell {cell.pk}",
             f"network: {rule_for(cell.predicted_type).label} {round(100 * cell.confidence)}%"]
    if tile.awaiting_review:
        notes.append("needs review")
    if tile.reviewed:
        notes.append("reviewed")
    if tile.left_out:
        notes.append("cut by the photograph's edge, not counted")
    picture = _PICTURE.format(url=escape(tile.crop_url), pk=cell.pk) if tile.crop_url else _NO_PICTURE
    return _TILE.format(classes=classes, pk=cell.pk, image=cell.image_id, index=cell.index,
                        title=escape(" · ".join(notes)), picture=picture,
                        edge=_EDGE if tile.left_out else "")


@register.simple_tag
def gallery_tiles(tiles):
    """A row's tiles (presenters.gallery.GalleryTile) as the gallery's markup."""
    return mark_safe("".join(_tile(tile) for tile in tiles))  # noqa: S308 - each part escaped above
