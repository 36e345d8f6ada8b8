"""Every type button on the sample page reads on white at WCAG AA's 4.5:1, as lab.css says: the
colour of its text, and the white on its colour where it is the cell's current type.

No worker: the samples are made in the database.
"""

import pytest

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
