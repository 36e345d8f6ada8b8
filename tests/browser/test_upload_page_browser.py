"""The upload page's own checks, before anything is sent: what the server would refuse of a batch,
said while the photographs are still being chosen."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.test_lab_browser import PASSWORD, sign_in
from tests.webapp.lab_factories import with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def noisy_png(path, seed):
    """About 0.6 MB: noise does not compress."""
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (400, 500, 3), np.uint8)).save(path)
    return str(path)


def test_a_batch_past_the_upload_s_bytes_or_files_is_named_before_it_is_sent(live_server, browser_page,
                                                                            django_user_model, settings,
                                                                            tmp_path):
    settings.MAX_UPLOAD_TOTAL_MB, settings.MAX_FILES_PER_UPLOAD = 1, 3
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/new/")
    page.wait_for_load_state()
    warning, button = page.locator("#upload-warning"), page.locator("#upload-button")

    fields = [noisy_png(tmp_path / f"field-{n}.png", n) for n in range(2)]
    total_mb = sum(Path(field).stat().st_size for field in fields) / 1024 / 1024
    page.set_input_files("#id_images", fields)
    expect(warning).to_be_visible()
    expect(warning).to_contain_text(f"These photographs come to {total_mb:.1f} MB; one upload holds at most "
                                    "1.0 MB, so the last of them will not be stored: split the batch.")
    expect(button).to_be_enabled()  # the server stores those that fit, and lists the rest

    page.get_by_role("button", name="Remove field-1.png").click()
    expect(warning).to_be_hidden()
    page.set_input_files("#id_images", [noisy_png(tmp_path / f"more-{n}.png", 10 + n) for n in range(3)])
    expect(warning).to_contain_text("At most 3 photographs per upload; remove 1 or split the batch.")
    expect(button).to_be_disabled()


def tiny_png(path):
    Image.new("RGB", (8, 8), (200, 150, 170)).save(path)
    return str(path)


def focused_remove(page):
    """The file name of the Remove button that has the focus, or the focused element's id."""
    return page.evaluate("""() => { const element = document.activeElement;
        const label = element.getAttribute('aria-label') || '';
        return label.startsWith('Remove ') ? label.slice(7) : '#' + element.id; }""")


def test_remove_hands_the_focus_on_and_says_what_it_removed(live_server, browser_page, django_user_model,
                                                            tmp_path):
    # The audit: the pressed button went with its file and the focus fell to <body>, so a keyboard
    # user started the page again from its top, and a screen reader heard nothing of the removal.
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/new/")
    page.wait_for_load_state()
    page.set_input_files("#id_images", [tiny_png(tmp_path / f"{name}.png") for name in "abc"])
    page.get_by_role("button", name="Remove b.png").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Remove b.png")).to_have_count(0)
    assert focused_remove(page) == "c.png"  # the next file's
    status = page.get_by_role("status").and_(page.locator("#upload-status"))
    expect(status).to_have_text("Removed b.png. 2 photographs chosen.")
    page.keyboard.press("Enter")
    assert focused_remove(page) == "a.png"  # the last one gone: the one before
    expect(status).to_have_text("Removed c.png. 1 photograph chosen.")
    page.keyboard.press("Space")
    assert focused_remove(page) == "#dropzone"  # none left: where files are chosen again
    expect(status).to_have_text("Removed a.png. 0 photographs chosen.")
    expect(page.locator("#filelist li")).to_have_count(0)
    page.set_input_files("#id_images", [tiny_png(tmp_path / "d.png")])
    expect(status).to_have_text("Added d.png. 1 photograph chosen.")


def test_the_warning_is_said_in_a_live_region_when_it_changes(live_server, browser_page, django_user_model,
                                                               settings, tmp_path):
    # The audit: the warning about files that will be refused appeared without being announced, and
    # was written anew at every choice and removal, the same words or not.
    settings.MAX_UPLOAD_BYTES = 300_000
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/new/")
    page.wait_for_load_state()
    region = page.get_by_role("status").filter(has=page.locator("#upload-warning"))
    expect(region).to_have_count(1)  # there before anything is said in it
    page.evaluate("""() => { window.warningWrites = 0;
        new MutationObserver(changes => { window.warningWrites += changes.length; })
            .observe(document.getElementById('upload-warning'),
                     { childList: true, characterData: true, subtree: true }); }""")

    page.set_input_files("#id_images", [noisy_png(tmp_path / "big.png", 1),
                                        tiny_png(tmp_path / "a.png"), tiny_png(tmp_path / "b.png")])
    expect(region).to_have_text("big.png is over the 293 kB limit and will be refused.")
    expect(page.locator("#upload-warning")).to_be_visible()
    writes = page.evaluate("window.warningWrites")
    assert writes > 0
    page.get_by_role("button", name="Remove a.png").click()
    expect(page.locator("#upload-status")).to_have_text("Removed a.png. 2 photographs chosen.")
    assert page.evaluate("window.warningWrites") == writes  # the same words: not said again
    page.get_by_role("button", name="Remove big.png").click()
    expect(page.locator("#upload-warning")).to_be_hidden()
    expect(region).to_have_text("")


def test_without_the_script_the_file_input_is_the_visible_control(live_server, chromium, django_user_model):
    # The zone was a Tab stop that did nothing, and the input it stands for was a 1 px transparent
    # box that took the focus unseen, where the page's script had not run.
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    context = chromium.new_context(java_script_enabled=False, viewport={"width": 1360, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, live_server.url, "tech")
        page.goto(f"{live_server.url}/samples/new/")
        assert page.locator("#dropzone").get_attribute("tabindex") is None
        files = page.locator("#id_images")
        assert files.bounding_box()["width"] > 50
        assert files.evaluate("input => getComputedStyle(input).opacity") == "1"
    finally:
        context.close()
    scripted = chromium.new_context(viewport={"width": 1360, "height": 900})
    try:
        page = scripted.new_page()
        sign_in(page, live_server.url, "tech")
        page.goto(f"{live_server.url}/samples/new/")
        expect(page.locator("#dropzone")).to_have_attribute("tabindex", "0")
        assert page.locator("#id_images").bounding_box()["width"] <= 1
    finally:
        scripted.close()


def test_the_drop_zone_says_what_works_with_the_script_and_without_it(live_server, chromium,
                                                                      django_user_model):
    # The audit: with scripts off the zone still said "Drop photographs here ... or click to choose
    # files", and neither a drop on it nor a click did anything: the file field alone works then.
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    for scripts, shown, absent in ((False, "Choose the photographs in the field below", "click"),
                                   (True, "Drop photographs here", "field below")):
        context = chromium.new_context(java_script_enabled=scripts, viewport={"width": 1360, "height": 900})
        try:
            page = context.new_page()
            sign_in(page, live_server.url, "tech")
            page.goto(f"{live_server.url}/samples/new/")
            words = page.locator("#dropzone").inner_text()
            assert shown in words and absent not in words, (scripts, words)
            if not scripts:
                assert "Drop" not in words and "several at once" in words
        finally:
            context.close()


def test_the_files_not_stored_describe_the_control_that_chose_them(live_server, browser_page,
                                                                   django_user_model, tmp_path):
    # The audit: the "These files were not stored" alert stood under the drop zone tied to nothing,
    # so a screen reader meeting the zone again did not hear which files had failed, or why.
    with_role(django_user_model.objects.create_user("tech", password=PASSWORD), "technologist")
    page = browser_page
    sign_in(page, live_server.url, "tech")
    page.goto(f"{live_server.url}/samples/new/")
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(b"not a photograph at all")
    page.fill("#id_accession_number", "BR-NOT-STORED")
    page.set_input_files("#id_images", [str(damaged)])
    page.click("#upload-button")
    expect(page.get_by_role("alert").filter(has_text="These files were not stored")).to_have_count(1)
    zone = page.locator("#dropzone")
    expect(zone).to_have_accessible_description(re.compile(
        r"^None of the files could be stored; nothing was saved\. "
        r"These files were not stored: damaged\.png:"))
    # Without the script the file input is the control: it is described by the list as well.
    described = page.locator("#id_images").get_attribute("aria-describedby").split()
    assert described == ["id_images_error", "upload-rejected"]
