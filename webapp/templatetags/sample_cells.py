"""A photograph's cells on the sample page, written here rather than in template loops: each cell
is drawn twice (its outline on the photograph, its row in the table below), and on a 500-cell
sample Django's template engine spent most of the page's time resolving those ~12,000 variables
(bench/web.py, "sample page, 500 cells"). format_html escapes every text it is given; what
repeats from cell to cell (a type's label, its outline's classes) is escaped once and reused.
Numbers are written as Python writes them, never localised: SVG and the page's script read them."""

from functools import lru_cache

from django import template
from django.template.defaultfilters import floatformat
from django.template.defaulttags import CsrfTokenNode
from django.urls import reverse
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import mark_safe

from webapp import wording
from webapp.counting import type_label
from webapp.selectors import label_stamp
from webapp.templatetags.review_buttons import review_buttons

register = template.Library()

# Each outline lies on a dark halo (lab.css): its type's colour alone stood out from the pink and
# purple of a stained smear at about 2:1, under WCAG 1.4.11's 3:1 for what a reviewer must see.
_OUTLINE = ('<g class="{classes}" data-cell="{pk}"><polygon class="halo" points="{points}"></polygon>'
            '<polygon points="{points}"></polygon>'
            '<text x="{x}" y="{y}" font-size="{size}">{number} {label}{mark}</text></g>')

_ROW = ('<tr class="cellrow" data-cell="{pk}" tabindex="-1" data-href="{url}">'
        '<td>{number}</td><td>{picture}</td>'
        '<td><span class="chip t-{type_class}">{label}</span>{network_said}{notes}</td>'
        '<td class="num">{percent}%</td><td class="muted">{group}</td><td>{review_state}</td>'
        '<td>{set_type}</td><td><a href="{url}">Open<span class="visually-hidden"> cell {number}</span></a>'
        '</td></tr>')
# Decorative: the row beside it says the cell's number and type, and its link is named "Open cell N".
_PICTURE = '<img class="thumb" src="{}" alt="" loading="lazy">'
# Struck through, which a screen reader does not say: the words say whose call it was.
_NETWORK_SAID = ('<span class="was" title="The network said {0}"><span class="visually-hidden">, the '
                 'network said </span>{0}</span>')
# "sample": the one trace of a cell once its sample is deleted, so that the answer can say so
# (views.deleted_meanwhile.cell_or_gone) rather than "not found".
_REVIEW_FORM = ('<form method="post" action="{action}" class="typebuttons review-form">{csrf}'
                '<input type="hidden" name="sample" value="{sample}">'
                '<input type="hidden" name="next" value="{next}">'
                '<input type="hidden" name="seen" value="{seen}">{buttons}</form>')
_EDGE = ('<span class="badge edge-cell" data-role="edge-cell" '
         'title="The photograph\'s edge cuts this cell">{}</span>')
_UNFAMILIAR = ('<span class="badge unfamiliar-cell" data-role="unfamiliar-cell" title="Unlike the cells '
               'the network was trained on (score {})">unfamiliar</span>')

# Markup with nothing interpolated into it; _NOTHING, for a part a cell lacks, is not escaped again.
_NOTHING = mark_safe("")
_CONFIRMED, _UNSURE = mark_safe(" ✓"), mark_safe(" ?")
_REVIEWED = mark_safe('<span class="badge reviewed">Reviewed</span>')
_FLAGGED = mark_safe('<span class="badge flag">Needs review</span>')
_LOCKED = mark_safe('<span class="muted small" data-role="locked">signed: locked</span>')
_AWAITING = mark_safe('<span class="muted small" data-role="awaiting-reading">being classified again: '
                      'relabel once done</span>')
_ADDED_BY_HAND = mark_safe('<span class="badge added-by-hand" data-role="added-by-hand" title="A reviewer '
                           'drew this box around a cell the detector missed">added by hand</span>')
_UNOUTLINED = mark_safe('<span class="badge unoutlined" data-role="unoutlined" title="No cell outline was '
                        'found on this photograph of one cell: the network classified its middle">middle of '
                        'the photograph</span>')


@register.filter
def isolated(text):
    """wording.isolated, for a name inside a plain-text sentence a page holds in an attribute (a
    confirmation dialog's)."""
    return wording.isolated(text)


def _address_of(name):
    """reverse(name, args=[pk]) as a function of pk, reversed once: a reversal costs ~15 µs,
    and a 500-cell page links every cell twice."""
    marker = "2147483647"
    before, after = reverse(name, args=[int(marker)]).split(marker)
    return lambda pk: f"{before}{pk}{after}"


@lru_cache(maxsize=1024)
def _label(name):
    """A type's (or a group's) label, escaped."""
    return conditional_escape(type_label(name))


@lru_cache(maxsize=1024)
def _type_class(name):
    return conditional_escape(name.lower())


@lru_cache(maxsize=1024)
def _outline_classes(name, flagged, reviewed, edge):
    return format_html("cellbox t-{}{}{}{}", name.lower(), " flagged" if flagged else "",
                       " reviewed" if reviewed else "", " edge" if edge else "")


def _outline(mark, number, size):
    cell = mark.cell
    flagged = cell.needs_review and not cell.corrected_type
    return {
        "classes": _outline_classes(cell.cell_type, flagged, bool(cell.corrected_type),
                                    cell.is_partial and not cell.count_partial),
        "pk": cell.pk,
        "points": f"{cell.x0},{cell.y0} {cell.x1},{cell.y0} {cell.x1},{cell.y1} {cell.x0},{cell.y1}",
        "x": cell.x0, "y": mark.label_y, "size": size, "number": number, "label": _label(cell.cell_type),
        "mark": _CONFIRMED if cell.corrected_type else (_UNSURE if flagged else _NOTHING),
    }


@register.simple_tag
def cell_outlines(photograph):
    """Each cell's outline and its label (number, type, ✓ reviewed or ? needs review), drawn over
    the photograph (SVG, in photograph pixels)."""
    size = conditional_escape(photograph.label_size)
    return format_html_join("\n", _OUTLINE, (
        _outline(mark, number, size) for number, mark in enumerate(photograph.cells, start=1)
    ))


def _notes(cell):
    """The badges beside a cell's type: drawn by hand, classified at a photograph's middle without an
    outline, cut by the edge, unfamiliar to the network."""
    if not (cell.added_by_hand or not cell.outlined or cell.is_partial
            or (cell.ood_score is not None and cell.ood_score > 1)):
        return _NOTHING
    edge = _NOTHING
    if cell.is_partial:
        edge = format_html(_EDGE, "edge, counted in" if cell.count_partial else "edge, not counted")
    unfamiliar = _NOTHING
    if cell.ood_score is not None and cell.ood_score > 1:
        unfamiliar = format_html(_UNFAMILIAR, floatformat(cell.ood_score, 1))
    return format_html("{}{}{}{}", _ADDED_BY_HAND if cell.added_by_hand else _NOTHING,
                       _NOTHING if cell.outlined else _UNOUTLINED, edge, unfamiliar)


def _row(mark, number, address, set_type):
    cell = mark.cell
    corrected = cell.corrected_type
    return {
        "pk": cell.pk, "url": address(cell.pk), "number": number,
        "picture": format_html(_PICTURE, cell.crop.url) if cell.crop else _NOTHING,
        "type_class": _type_class(cell.cell_type), "label": _label(cell.cell_type),
        "network_said": format_html(_NETWORK_SAID, _label(cell.predicted_type))
        if corrected and corrected != cell.predicted_type else _NOTHING,
        "notes": _notes(cell),
        "percent": round(cell.confidence * 100),  # as {% widthratio confidence 1 100 %}
        "group": _label(mark.group),
        "review_state": _REVIEWED if corrected else (_FLAGGED if cell.needs_review else _NOTHING),
        "set_type": set_type(mark),
    }


@register.simple_tag(takes_context=True)
def cell_rows(context, photograph, sample, may_review):
    """The table rows of a photograph's cells: picture, type, confidence, group, review state and,
    where ``may_review`` (the user's permission) and the sample is not signed, the type buttons."""
    if sample.is_signed:
        def set_type(mark):
            return _LOCKED
    elif may_review:
        review_address = _address_of("lab:cell-review")
        csrf = CsrfTokenNode().render(context)  # once for the photograph's forms, not once each
        back = conditional_escape(photograph.address)

        def set_type(mark):
            # Work on a cell the run does not find again would be lost with it (services.review).
            if photograph.image.reads_again_calls_of(mark.cell.model_version_id):
                return _AWAITING
            return format_html(_REVIEW_FORM, action=review_address(mark.cell.pk), csrf=csrf,
                               sample=sample.pk, next=back, seen=label_stamp(mark.cell),
                               buttons=review_buttons(mark.review_types, mark.cell))
    else:
        def set_type(mark):
            return _NOTHING
    address = _address_of("lab:cell-detail")
    return format_html_join("\n", _ROW, (
        _row(mark, number, address, set_type) for number, mark in enumerate(photograph.cells, start=1)
    ))
