"""The lab's tables as a screen reader meets them, in a real browser (Chromium's accessibility tree,
as Playwright's role locators and ARIA snapshots read it): each figure is announced with its row's
name and its column's, so a row's first cell is its row header and every column has a header.

No worker: samples are made in the database.
"""

import pytest
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.webapp.lab_factories import make_sample, with_role
from webapp.models import Cell

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def technologist(django_user_model):
    return with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")


def test_the_reports_rows_are_named_by_their_first_cell(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-REPORT", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/{sample.pk}/report/")

    differential = page.locator("section.report-differential table.figures").first
    # The Total row is named "Total", as each type's row is by its type: its count is read as
    # "Total, Count, 3", not as a bare 3 under a column header.
    for name in ("Neutrophil", "Lymphocyte", "Total"):
        expect(differential.get_by_role("rowheader", name=name, exact=True)).to_have_count(1)
    for name in ("Type", "Count", "%", "95% range"):
        expect(differential.get_by_role("columnheader", name=name, exact=True)).to_have_count(1)
    total = differential.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Total"))
    # The Total row's figures are data, not more headers.
    expect(total.get_by_role("cell", name="3", exact=True)).to_have_count(1)
    expect(total.get_by_role("columnheader")).to_have_count(0)
    groups = page.locator("table.figures.groups")
    for name in ("Mononuclear", "Polynuclear"):
        expect(groups.get_by_role("rowheader", name=name, exact=True)).to_have_count(1)


def test_the_formulas_rows_are_named_by_their_first_cell(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-FORMULA", types=("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE"), user=user)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    for address in (f"/samples/{sample.pk}/", f"/samples/{sample.pk}/gallery/"):
        page.goto(live_server.url + address)
        types = page.locator("#formula table[data-role=types]")
        for name in ("Neutrophil", "Lymphocyte", "Total"):
            expect(types.get_by_role("rowheader", name=name, exact=True)).to_have_count(1)
        total = types.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Total"))
        expect(total.get_by_role("cell", name="3", exact=True)).to_have_count(1)
        groups = page.locator("#formula table[data-role=groups]")
        for name in ("Mononuclear", "Polynuclear"):
            expect(groups.get_by_role("rowheader", name=name, exact=True)).to_have_count(1)


def test_the_cell_pages_probabilities_have_a_name_and_headers(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-PROBS", types=("NEUTROPHIL",), user=user)
    cell = Cell.objects.get(image__sample=sample)
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/cells/{cell.pk}/")

    table = page.get_by_role("table", name="Network's probabilities", exact=True)
    expect(table).to_have_count(1)
    expect(table.get_by_role("columnheader", name="Type", exact=True)).to_have_count(1)
    expect(table.get_by_role("columnheader", name="Probability", exact=True)).to_have_count(1)
    # Every type the network gives a probability is a row named by it, its figure a data cell.
    names = table.get_by_role("rowheader").all_inner_texts()
    assert len(names) == len(cell.probabilities) and "Neutrophil" in [name.strip() for name in names]
    best = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Neutrophil"))
    expect(best.get_by_role("cell", name="90.0%", exact=True)).to_have_count(1)


PHONE = {"width": 390, "height": 844}


def headers_and_rows(table):
    """The table's column headers as the accessibility tree holds them, and each body row's number of
    cells: a screen reader pairs a cell with the header of its column."""
    headers = [name.strip() for name in table.get_by_role("columnheader").all_text_contents()]
    rows = table.locator("tbody tr").evaluate_all("rows => rows.map(row => row.cells.length)")
    return headers, rows


def test_on_a_phone_each_cell_keeps_its_column_header(live_server, browser_page, django_user_model):
    user = technologist(django_user_model)
    sample = make_sample("BR-NARROW", types=("NEUTROPHIL", "LYMPHOCYTE"), user=user, confidence=0.6)
    page = browser_page
    page.set_viewport_size(PHONE)
    sign_in(page, live_server.url, "tech")

    # The sample page's cells are cards on a phone; their headers are out of sight, not gone.
    page.goto(f"{live_server.url}/samples/{sample.pk}/")
    cells = page.locator("table.cells")
    headers, rows = headers_and_rows(cells)
    assert headers == ["#", "Picture", "Type", "Confidence", "Group", "Review", "Set type", "Cell page"]
    assert rows == [len(headers)] * 2

    # The sample list's rows too; the names shown beside its figures are for the eye, the column's
    # header already says them: "Leukocytes" is not read twice.
    page.goto(f"{live_server.url}/samples/")
    samples = page.locator("table.sample-rows")
    headers, rows = headers_and_rows(samples)
    assert headers == ["Accession number", "Received", "By", "Photographs", "Progress", "Leukocytes",
                       "To review", "Status"]
    assert rows == [len(headers)]
    expect(samples.get_by_role("cell", name="2", exact=True)).to_have_count(2)  # leukocytes, to review
    assert samples.locator("[data-role=leukocytes]").bounding_box()["width"] > 40  # its name shown

    # The history's table keeps its headers in view, scrolling sideways in its own box.
    page.goto(f"{live_server.url}/history/?view=table")
    headers, rows = headers_and_rows(page.locator("main table"))
    assert headers[1:4] == ["Type", "Confidence", "Review"] and rows == [len(headers)] * 2
