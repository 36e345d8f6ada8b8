"""Every type button on the sample page reads on white at WCAG AA's 4.5:1, as lab.css says: the
colour of its text, and the white on its colour where it is the cell's current type.

No worker: the samples are made in the database.
"""

import pytest
from playwright.sync_api import expect

from classifier.labels import BINARY_CLASSES
from tests.browser.test_lab_browser import PASSWORD, contrast_on_white, sign_in
from tests.webapp.lab_factories import make_sample, make_version, with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_every_type_colour_reads_on_white(live_server, browser_page, django_user_model):
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    typed = make_sample("BR-TYPED", types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL"), user=user)
    binary = make_sample("BR-BINARY", types=BINARY_CLASSES, user=user,
                         version=make_version(class_names=BINARY_CLASSES))
    page = browser_page
    sign_in(page, live_server.url, "tech")
    colours = {}
    for sample in (typed, binary):
        page.goto(f"{live_server.url}/samples/{sample.pk}/")
        colours.update(page.evaluate("""() => Object.fromEntries(
            Array.from(document.querySelectorAll('.typebtn'), button =>
                [button.value, getComputedStyle(button).getPropertyValue('--type').trim()]))"""))
    assert {"EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL", *BINARY_CLASSES} <= set(colours)
    ratios = {value: round(contrast_on_white(hex_to_rgb(colour)), 2) for value, colour in colours.items()}
    assert {value: ratio for value, ratio in ratios.items() if ratio < 4.5} == {}
    # The network's unconfirmed call is marked by its dashed border, not a "?": on the photograph's
    # labels "?" means "needs review", which a confident call does not.
    marks = page.evaluate("""() => Array.from(document.querySelectorAll('.typebtn.current.unconfirmed'),
        button => button.textContent + getComputedStyle(button, '::after').content)""")
    assert marks and all("?" not in mark for mark in marks)


def hex_to_rgb(colour):
    """'#1b79cd' as 'rgb(27, 121, 205)', the form contrast_on_white reads."""
    colour = colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(colour[i:i + 2], 16) for i in (0, 2, 4)))


# Colours of stained smears, measured: of 40 photographs of each source, BCCD's 5th, 50th and 95th
# percentile pixel by luminance, and PBC's 5th (a nucleus's purple), 25th, 50th and 95th.
SMEAR_BACKGROUNDS = {"BCCD red cell": (171, 138, 131), "BCCD median": (193, 182, 196),
                     "BCCD plasma": (207, 208, 210), "PBC nucleus": (107, 86, 143),
                     "PBC red cell": (208, 168, 166), "PBC median": (241, 209, 196),
                     "PBC plasma": (254, 231, 200)}


def luminance(rgb):
    def linear(channel):
        channel /= 255
        return channel / 12.92 if channel <= 0.03928 else ((channel + 0.055) / 1.055) ** 2.4

    red, green, blue = rgb
    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def contrast(one, other):
    lighter, darker = sorted((luminance(one), luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def seen_on(rgb, opacity, background):
    return tuple(opacity * part + (1 - opacity) * under for part, under in zip(rgb, background, strict=True))


# Each outline's drawn strokes, in the order drawn: colour (r, g, b), opacity, width, dashes.
STROKES = """() => Array.from(document.querySelectorAll('.smear-frame svg .cellbox'), box => [
    box.getAttribute('class'),
    Array.from(box.querySelectorAll('polygon'), polygon => { const style = getComputedStyle(polygon);
        return [style.stroke.match(/\\d+/g).slice(0, 3).map(Number),
                parseFloat(style.strokeOpacity) * parseFloat(style.opacity),
                parseFloat(style.strokeWidth), style.strokeDasharray]; })])"""


def test_every_outline_on_a_photograph_stands_out_from_the_smear(live_server, browser_page,
                                                                 django_user_model):
    # The audit (WCAG 1.4.11, 3:1 for what must be seen): the outlines' type colours stood out from a
    # smear at about 2.2:1, an edge cell's faded one at 1.4:1 and an artefact's grey at 1.3:1.
    from webapp.models import Cell

    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-OUTLINES", types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL",
                                               "NEUTROPHIL"), user=user)
    flagged, reviewed, artefact, edge, _ = Cell.objects.filter(image__sample=sample).order_by("index")
    Cell.objects.filter(pk=flagged.pk).update(needs_review=True)
    Cell.objects.filter(pk=reviewed.pk).update(corrected_type="LYMPHOCYTE")
    Cell.objects.filter(pk=artefact.pk).update(corrected_type="ARTEFACT", cell_type="ARTEFACT")
    Cell.objects.filter(pk=edge.pk).update(is_partial=True)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    page.locator(".smear-frame svg .cellbox").last.hover()  # a hovered outline is drawn wider
    outlines = page.evaluate(STROKES)
    kinds = " ".join(classes for classes, _ in outlines)
    assert all(kind in kinds for kind in ("flagged", "reviewed", "t-artefact", "edge"))

    too_faint = {}
    for classes, strokes in outlines:
        # Drawn first, under the outline: the stroke that meets the photograph on either side.
        assert len(strokes) == 2, classes
        (halo, halo_opacity, halo_width, halo_dashes), (_, _, width, _) = strokes
        assert halo_width >= width + 2, classes  # at least a pixel of it on either side of the colour
        assert halo_dashes == "none", classes  # whole where the colour is dashed
        for name, background in SMEAR_BACKGROUNDS.items():
            ratio = contrast(seen_on(halo, halo_opacity, background), background)
            if ratio < 3:
                too_faint[f"{classes} on {name}"] = round(ratio, 2)
    assert too_faint == {}


# How an outline of these classes is drawn: its halo's and its line's stroke, width, opacity, and
# whether it is dashed (a swatch's dashes are its size's, shorter than the photograph's).
OUTLINE_LOOKS = """([halo, line]) => [halo, line].map(part => {
    const style = getComputedStyle(part);
    return [style.stroke, style.strokeWidth, style.strokeOpacity,
            style.strokeDasharray === 'none' ? 'solid' : 'dashed'];
})"""
# The same, for an outline of ``classes`` drawn on the photograph as sample_cells._OUTLINE draws one.
PHOTOGRAPH_LOOKS = """(classes) => {
    const svg = document.querySelector('.smear-frame svg');
    const outline = document.createElementNS('http://www.w3.org/2000/svg', 'g');
    outline.setAttribute('class', classes);
    outline.innerHTML = '<polygon class="halo" points="1,1 40,1 40,30"></polygon>'
        + '<polygon points="1,1 40,1 40,30"></polygon>';
    svg.appendChild(outline);
    const looks = (""" + OUTLINE_LOOKS + """)(outline.querySelectorAll('polygon'));
    outline.remove();
    return looks;
}"""


def test_the_legend_draws_each_outline_as_the_photograph_does(live_server, browser_page, django_user_model):
    # The audit: the photograph's outlines lie on a black halo (lab.css), while the legend drew its
    # swatches on white without one, thinner, and the artefact's in another grey.
    user = with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    sample = make_sample("BR-LEGEND", types=("NEUTROPHIL",), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    swatches = page.locator("[data-role=box-legend] svg g.cellbox")
    expect(swatches).to_have_count(5)
    for index in range(5):
        swatch = swatches.nth(index)
        classes = swatch.get_attribute("class")
        # A halo, then the line.
        assert swatch.evaluate("g => g.querySelectorAll('rect').length") == 2, classes
        legend = swatch.evaluate("g => (" + OUTLINE_LOOKS + ")(g.querySelectorAll('rect'))")
        assert legend == page.evaluate(PHOTOGRAPH_LOOKS, classes), classes
