"""From upload to a signed, locked report in a real browser, with the real worker and network.

A technologist uploads two smears, draws a box around a cell the detector "missed", works through
the gallery with the mouse and the keyboard (one cell becomes an erythroblast: the formula's NRBC
line appears); a hematologist signs below the target with a reason; the report and its PDF are
linked; a relabel on the signed sample is refused and changes nothing. Leaves gallery-journey.png,
report.png and signed-sample.png in test-output/.
"""

import re

import pytest

from classifier.boxes import box_iou
from tests.browser.test_lab_browser import PASSWORD, SCREENSHOTS, sign_in
from tests.conftest import require_dataset, wait_for
from tests.webapp.lab_factories import with_role
from webapp.models import Cell, CellReview, Sample
from webapp.selectors import leukocyte_formula

# Generous: the machine running the suite may be busy. Nothing here measures time.
WORKER_TIMEOUT_S = 120

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def free_box(image, side=70):
    """A box of the photograph that overlaps no cell found in it, away from its edges."""
    taken = [cell.box for cell in Cell.objects.filter(image=image)]
    for y0 in range(20, image.height - side - 20, 15):
        for x0 in range(20, image.width - side - 20, 15):
            box = (x0, y0, x0 + side, y0 + side)
            if all(box_iou(box, other) == 0 for other in taken):
                return box
    pytest.fail("no free place on the photograph to draw a box")


def test_gallery_missed_cell_sign_off_report_and_lock(live_server, celery_worker, served_model,
                                                      browser_page, django_user_model):
    smears = sorted(require_dataset("bccd-smears", "JPEGImages").glob("BloodImage_*.jpg"))[6:8]
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    hema = with_role(django_user_model.objects.create_user("hema", password=PASSWORD), "hematologist")
    page = browser_page
    sign_in(page, live_server.url, "tech")

    page.click("text=New sample")
    page.fill("#id_accession_number", "BR-SIGN")
    page.set_input_files("#id_images", [str(path) for path in smears])
    page.click("#upload-button")
    page.wait_for_url(re.compile(r".*/samples/\d+/$"))
    page.wait_for_selector("text=Both photographs classified", timeout=240_000)
    sample = Sample.objects.get(accession_number="BR-SIGN")
    sample_url = page.url

    # A cell the detector missed: drag a box around it on the first photograph.
    image = sample.images.order_by("id").first()
    x0, y0, x1, y1 = free_box(image)
    page.locator("[data-role=add-cell-toggle]").first.click()
    frame = page.locator(".smear-frame").first
    frame.scroll_into_view_if_needed()
    bounds = frame.bounding_box()
    scale = bounds["width"] / image.width
    page.mouse.move(bounds["x"] + x0 * scale, bounds["y"] + y0 * scale)
    page.mouse.down()
    page.mouse.move(bounds["x"] + x1 * scale, bounds["y"] + y1 * scale, steps=5)
    page.mouse.up()
    results_asked = []
    page.on("request", lambda request: results_asked.append(request.url)
            if "/results/" in request.url else None)
    page.get_by_role("button", name="Add this box").first.click()
    wait_for(lambda: Cell.objects.filter(image=image, added_by_hand=True).exists(), "the drawn cell",
             WORKER_TIMEOUT_S)
    added = Cell.objects.get(image=image, added_by_hand=True)
    assert abs(added.x0 - x0) <= 2 and abs(added.y1 - y1) <= 2  # screen pixels, rounded
    # The page follows by itself: the box's waiting note goes and the cell's row comes, in its card.
    page.wait_for_selector("[data-role=pending-cells]", state="detached", timeout=30_000)
    page.wait_for_selector(f"#image-{image.pk} tr.cellrow[data-cell='{added.pk}']", timeout=30_000)
    # Only that photograph's card was asked for, not the whole results of the sample.
    assert results_asked and all(f"image={image.pk}" in url for url in results_asked), results_asked

    # The gallery: confirm every cell in one go, then make one an erythroblast by its key.
    page.click("[data-role=gallery-link]")
    page.wait_for_selector(".gtile")
    tiles = page.locator(".gtile")
    count = tiles.count()
    assert count == Cell.objects.filter(image__sample=sample).count() >= 2
    tiles.nth(0).click()
    tiles.nth(count - 1).click(modifiers=["Shift"])
    assert page.locator(".gtile.selected").count() == count
    page.keyboard.press("n")
    wait_for(lambda: CellReview.objects.filter(cell__image__sample=sample).count() >= count,
             "the reviews of every cell", WORKER_TIMEOUT_S)
    page.wait_for_function(f"() => document.querySelectorAll('.gallery-row[data-type=\"NEUTROPHIL\"] "
                           f".gtile').length === {count}")
    # No erythroblast yet: an eight-type network's formula shows NRBC at 0, a four-type one none.
    assert page.locator("#formula [data-role=per-100]:has-text('(1 cell)')").count() == 0
    first = page.locator('.gallery-row[data-type="NEUTROPHIL"] .gtile').first
    first.click()
    page.keyboard.press("ArrowRight")  # the keyboard moves the selection to the next cell
    page.keyboard.press("r")
    page.wait_for_selector("#formula [data-role=per-100]:has-text('(1 cell)')")
    nrbc = page.locator("#formula [data-role=per-100]").inner_text()
    (expected,) = leukocyte_formula(sample).per_100  # one erythroblast per the differential's cells
    assert expected.count == 1 and f"NRBC: {expected.per_100:g} per 100 leukocytes (1 cell)" in nrbc, nrbc
    assert Cell.objects.filter(image__sample=sample, cell_type="ERYTHROBLAST").count() == 1
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "gallery-journey.png"), full_page=True)

    # A technologist sees the sign-off state but no sign button.
    page.goto(sample_url)
    assert page.locator("[data-role=sign-form]").count() == 0

    # The hematologist signs with fewer leukocytes than the target, saying why.
    page.context.clear_cookies()
    sign_in(page, live_server.url, "hema")
    page.goto(sample_url)
    page.fill("#below-target-reason", "Leukopenic sample: all fields scanned")
    # A relabel on this page while the reason is written keeps the reason, and the form then signs
    # the result as this page now shows it (a result changed elsewhere is refused).
    shown = page.input_value("input[name=result_seen]")
    neutrophil = Cell.objects.filter(image__sample=sample, cell_type="NEUTROPHIL").first()
    page.locator(f'tr.cellrow[data-cell="{neutrophil.pk}"]').click()
    page.keyboard.press("m")
    page.wait_for_function("shown => document.querySelector('input[name=result_seen]').value !== shown",
                           arg=shown)
    assert page.input_value("#below-target-reason") == "Leukopenic sample: all fields scanned"
    page.click("[data-role=sign-form] button[type=submit]")
    page.wait_for_selector("[data-role=signed-by]")
    sample.refresh_from_db()
    assert sample.is_signed and sample.signed_by == hema
    assert page.locator("[data-role=add-cell-toggle]").count() == 0  # locked: no drawing
    page.screenshot(path=str(SCREENSHOTS / "signed-sample.png"), full_page=True)

    pdf = page.request.get(live_server.url + page.locator("a", has_text="PDF").first.get_attribute("href"))
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    page.click("a:has-text('Report')")
    page.wait_for_selector("text=BR-SIGN")
    report = page.content()
    assert "hema" in report and "NRBC" in report and "NOT SIGNED" not in report
    page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)

    # On the signed sample a relabel is refused with a message, and nothing changes.
    page.goto(f"{live_server.url}/samples/{sample.pk}/gallery/")
    page.locator(".gtile").first.click()
    page.keyboard.press("l")
    page.wait_for_selector("#gallery-message:has-text('signed')")
    assert Cell.objects.filter(image__sample=sample, cell_type="LYMPHOCYTE").count() == 0
    assert CellReview.objects.filter(cell__image__sample=sample, to_type="LYMPHOCYTE").count() == 0
