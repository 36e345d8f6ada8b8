"""The printable report of a sample and its PDF: one view model, the same figures on both."""

import base64
import csv
import io
import re
import unicodedata
import zlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image

from tests.webapp.lab_factories import make_sample, make_version, mark_signed, named_hematologist, with_role
from webapp.models import Cell, Sample, SmearImage
from webapp.services.review import review_cell
from webapp.services.sign_off import reopen_sample, sign_sample

pytestmark = pytest.mark.django_db

TYPES = ("NEUTROPHIL", "NEUTROPHIL", "LYMPHOCYTE", "NEUTROPHIL", "ERYTHROBLAST")


@pytest.fixture
def hematologist(django_user_model):
    return named_hematologist(django_user_model)



def store_crops(sample):
    """Real JPEG crops where the factory's cells point, as the worker would have stored them."""
    for cell in Cell.objects.filter(image__sample=sample):
        picture = io.BytesIO()
        # Each its own colour: ReportLab stores identical pictures once.
        Image.new("RGB", (40, 40), (180, 60 + 20 * cell.index, 160)).save(picture, "JPEG")
        if default_storage.exists(cell.crop.name):
            default_storage.delete(cell.crop.name)
        default_storage.save(cell.crop.name, ContentFile(picture.getvalue()))


def pdf_text(data):
    """The page content of a PDF, its streams decoded (no PDF reader is installed): ReportLab
    writes them Flate-compressed, then ASCII85-encoded."""
    texts = [data]
    for stream in re.findall(rb"/ASCII85Decode /FlateDecode \][^>]*>>\s*stream\r?\n(.*?)endstream",
                             data, re.S):
        texts.append(zlib.decompress(base64.a85decode(stream.strip(), adobe=True)))
    return b"\n".join(texts)


def _streams(objects):
    """Each object's dictionary and its stream, decoded: ReportLab writes page content Flate-compressed
    and ASCII85-encoded, a font's ToUnicode CMap Flate-compressed."""
    for number, body in objects.items():
        found = re.match(rb"(<<.*?>>)\s*stream\r?\n(.*)endstream", body, re.S)
        if found and rb"/FlateDecode" in found[1]:
            stream = found[2]
            if rb"/ASCII85Decode" in found[1]:
                stream = base64.a85decode(stream.strip(), adobe=True)
            yield number, found[1], zlib.decompressobj().decompress(stream)


_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"\n": b""}


def _literal(string):
    """A PDF literal string's bytes, its backslash escapes undone."""
    def undo(escape):
        octal, char = escape.groups()
        return bytes([int(octal, 8)]) if octal else _ESCAPES.get(char, char)
    return re.sub(rb"\\(?:([0-7]{1,3})|(.))", undo, string, flags=re.S)


def pdf_lines(data):
    """The lines of text a PDF reader copies out of the report: each string shown read through its
    font's ToUnicode CMap (the embedded DejaVu Sans subsets), as UTF-16 for a CJK font's UCS-2
    encoding (ReportLab's CID fonts), as Windows-1252 for a built-in font."""
    objects = {int(number): body for number, body in re.findall(rb"(\d+) 0 obj\s*(.*?)endobj", data, re.S)}
    cmaps = {number: {int(code, 16): chr(int(char, 16)) for code, char in
                      re.findall(rb"<([0-9A-F]{2})> <([0-9A-F]+)>", stream)}
             for number, _, stream in _streams(objects) if b"beginbfchar" in stream}
    fonts = {}
    for table in set(re.findall(rb"/Font (\d+) 0 R", data)):  # the pages' font resources: name -> font
        for name, number in re.findall(rb"/(\S+) (\d+) 0 R", objects[int(table)]):
            font = objects[int(number)]
            unicode = re.search(rb"/ToUnicode (\d+) 0 R", font)
            if unicode:
                fonts[name] = lambda raw, cmap=cmaps[int(unicode[1])]: "".join(cmap[code] for code in raw)
            elif re.search(rb"/Encoding /Uni\w+-UCS2-H", font):
                fonts[name] = lambda raw: raw.decode("utf-16-be")
            else:
                fonts[name] = lambda raw: raw.decode("cp1252")
    lines, line, font = [], [], None
    # A font chosen, a string shown, or the end of a line (a new line, a move, the text's end).
    shown = rb"/(\S+) [\d.]+ Tf|\(((?:\\.|[^\\()])*)\) Tj|(?<!\S)(T\*|Td|TD|Tm|ET)(?!\S)"
    for _, head, stream in _streams(objects):
        if b"/Length1" in head or b"beginbfchar" in stream:
            continue  # a font file or a CMap, not a page
        for name, string, ends in re.findall(shown, stream, re.S):
            if name:
                font = fonts[name]
            elif ends:
                if line:
                    lines.append("".join(line))
                line = []
            else:
                line.append(font(_literal(string)))
    return lines


def test_report_page_shows_accession_figures_nrbc_and_signer(client, tech, hematologist):
    sample = mark_signed(make_sample("H26-0042", types=TYPES), hematologist)
    page = client.get(reverse("lab:sample-report", args=[sample.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "H26-0042" in html and "img/favicon.svg" in html  # its own head: no /favicon.ico 404
    assert "Ada Lovelace" in html and "NOT SIGNED" not in html and "amended" not in html
    assert re.search(r'data-type="NEUTROPHIL"><th scope="row">Neutrophil</th><td class="num">3</td>'
                     r'<td class="num">75.0</td>', html)
    assert re.search(r'data-type="LYMPHOCYTE"><th scope="row">Lymphocyte</th><td class="num">1</td>'
                     r'<td class="num">25.0</td>', html)
    assert re.search(r'data-type="ERYTHROBLAST"><th scope="row">NRBC</th><td class="num">1</td>'
                     r'<td class="num">25.0</td>', html)
    assert "Mononuclear" in html and "Polynuclear" in html
    assert "4 leukocytes counted, below the target of 100" in html
    version = sample.images.get().model_version
    assert f"v{version.pk} (leukonet, four cell types, network {version.model_sha256[:12]})" in html
    assert "css/report.css" in html and 'class="mainnav"' not in html


def test_unsigned_report_is_marked_preliminary_and_a_resigned_one_amended(client, tech, hematologist):
    sample = make_sample("H26-0043", types=TYPES)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "NOT SIGNED &mdash; preliminary" in html or "NOT SIGNED — preliminary" in html
    mark_signed(sample, hematologist, times=2)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "NOT SIGNED" not in html and "amended" in html and "signed 2 times" in html


def test_an_amended_result_says_why_wherever_it_is_read(client, tech, hematologist):
    # The audit reopened a result ("Cell 1 is a basophil"), corrected and signed it again: the
    # report, PDF, CSV, API and FHIR all said "amended" and none of them why.
    with_role(hematologist, "hematologist")
    sample = make_sample("H26-0052", types=TYPES)
    sign_sample(sample, hematologist, below_target_reason="Leukopenic")
    final = client.get(reverse("lab:api-sample", args=[sample.pk])).json()
    assert final["result"] == "final" and final["amendment"] is None
    reopen_sample(sample, hematologist, "Cell 3 is a basophil <not a lymphocyte>")
    # Reopened, it is preliminary again: nothing is amended until it is signed again.
    reopened = client.get(reverse("lab:api-sample", args=[sample.pk])).json()
    assert reopened["result"] == "preliminary" and reopened["amendment"] is None
    reopened_html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "Amended after reopening" not in reopened_html
    review_cell(Cell.objects.get(image__sample=sample, index=2), "BASOPHIL", hematologist)
    sample = sign_sample(sample, hematologist, below_target_reason="Leukopenic")
    why = "Amended after reopening by Ada Lovelace on "
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert 'data-role="amended-because">Amended after reopening by <bdi>haem</bdi> on ' in page

    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "Amended after reopening by <bdi>Ada Lovelace</bdi> on " in html
    assert ": <bdi>Cell 3 is a basophil &lt;not a lymphocyte&gt;</bdi></p>" in html
    text = pdf_text(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)
    assert b"Amended after reopening by Ada Lovelace" in text and b"Cell 3 is a basophil" in text
    csv_text = client.get(reverse("lab:sample-export", args=[sample.pk])).content.decode()
    assert "amended_because,Cell 3 is a basophil <not a lymphocyte>" in csv_text
    assert "reopened_by,haem" in csv_text
    amended = client.get(reverse("lab:api-sample", args=[sample.pk])).json()
    assert amended["result"] == "amended" and amended["amendment"]["reopened_by"] == "haem"
    assert amended["amendment"]["reason"] == "Cell 3 is a basophil <not a lymphocyte>"
    listed = client.get(reverse("lab:api-samples")).json()["results"][0]
    assert listed["amendment"] == amended["amendment"]
    conclusion = client.get(reverse("lab:api-sample-fhir", args=[sample.pk])).json()["entry"][0]["resource"][
        "conclusion"]
    assert conclusion.startswith(why) and "Cell 3 is a basophil <not a lymphocyte>. " in conclusion


def test_report_lists_what_was_left_out_and_why_figures_may_mislead(client, tech, hematologist):
    sample = make_sample("H26-0044", types=(*TYPES, "PLATELET", "UNIDENTIFIED", "NEUTROPHIL"))
    image = sample.images.get()
    SmearImage.objects.filter(pk=image.pk).update(
        quality_warnings=["The image looks out of focus: results may be unreliable."])
    Cell.objects.filter(image=image, index=7).update(is_partial=True)
    # Most of the photograph's cells unlike the training cells: another lab's stain or camera.
    Cell.objects.filter(image=image, index__lt=6).update(ood_score=1.7)
    Cell.objects.filter(image=image, index__gte=6).update(ood_score=0.4)
    sample.below_target_reason = "Leukopenic sample: 5 cells in all the smear."
    mark_signed(sample, hematologist)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "Platelet: 1" in html and "Unidentified: 1" in html
    assert "Cut by the photograph's edge, left out: 1" in html
    assert "out of focus" in html
    assert ("6 of the 8 cells found on it are unlike those the network was trained on (another stain or "
            "camera?): check its calls by eye.") in html
    assert "Signed below the target count of 100: <bdi>Leukopenic sample" in html
    # The workflow audit: once a person labelled every one of them, the report said so no longer.
    for cell in Cell.objects.filter(image=image, index__lt=6):
        Cell.objects.filter(pk=cell.pk).update(corrected_type=cell.cell_type)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "trained on (another stain or camera?): a person reviewed each of them." in html
    # Reopened, the result is preliminary again: the earlier signature's reason no longer stands.
    Sample.objects.filter(pk=sample.pk).update(status=Sample.Status.REOPENED)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "NOT SIGNED" in html and "Signed below the target count" not in html


def test_report_warns_when_photographs_were_classified_by_different_networks(client, tech):
    sample = make_sample("H26-0045", types=TYPES)
    other = make_sample("H26-0046", types=("MONOCYTE",), version=make_version())
    other.images.update(sample=sample)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "classified by different networks" in html


def test_pdf_has_the_page_content_and_the_crops(client, tech, hematologist):
    sample = mark_signed(make_sample("H26-0047", types=TYPES), hematologist)
    store_crops(sample)
    response = client.get(reverse("lab:sample-report-pdf", args=[sample.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="H26-0047-report.pdf"'
    data = response.content
    assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
    text = pdf_text(data)
    for expected in (b"H26-0047", b"Ada Lovelace", b"75.0", b"25.0", b"NRBC", b"Neutrophil"):
        assert expected in text, expected
    assert b"NOT SIGNED" not in text
    # Every page says whose result it is, how final, and which page it is.
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert pages >= 1
    lines = pdf_lines(data)
    assert lines.count("Leukocyte differential H26-0047 \u2014 Final") == pages
    assert [int(line[5:]) for line in lines if line.startswith("Page ")] == list(range(1, pages + 1))
    # One picture per stored crop: three types on the sample, five cells.
    assert len(re.findall(rb"/Subtype\s*/Image", data)) == 5


def test_pdf_of_an_unsigned_sample_says_so_and_survives_odd_text(client, tech):
    sample = make_sample('A<1>&"é/x', types=TYPES)  # no crops stored: the gallery is left out
    response = client.get(reverse("lab:sample-report-pdf", args=[sample.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="A_1_____x-report.pdf"'
    text = pdf_text(response.content)
    assert b"NOT SIGNED" in text and b"A&lt;1&gt;" not in text


def test_sample_page_links_to_the_report_and_pdf(client, tech):
    sample = make_sample("H26-0048")
    html = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert reverse("lab:sample-report", args=[sample.pk]) in html
    assert reverse("lab:sample-report-pdf", args=[sample.pk]) in html


def test_report_needs_a_sign_in(client):
    sample = make_sample("H26-0049")
    for name in ("lab:sample-report", "lab:sample-report-pdf"):
        response = client.get(reverse(name, args=[sample.pk]))
        assert response.status_code == 302 and "/login" in response["Location"]


def test_report_of_a_sample_without_photographs_still_draws(client, tech):
    sample = Sample.objects.create(accession_number="H26-0050")
    page = client.get(reverse("lab:sample-report", args=[sample.pk]))
    assert page.status_code == 200 and "No leukocyte is counted" in page.content.decode()
    pdf = client.get(reverse("lab:sample-report-pdf", args=[sample.pk]))
    assert pdf.status_code == 200 and b"H26-0050" in pdf_text(pdf.content)


def test_with_no_leukocyte_counted_no_share_or_per_100_figure_is_given(client, tech):
    # An erythroblast and a platelet, nothing else: the report read "Total 0 100.0", every range
    # "0.0-0.0" and "NRBC 1 0.0 /100 WBC"; the CSV said 0.0 where the report said 100.0.
    from classifier.labels import EIGHT_CLASSES

    sample = make_sample("H26-ZERO", types=("ERYTHROBLAST", "PLATELET"),
                         version=make_version(class_names=EIGHT_CLASSES))
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "No leukocyte is counted: there is no differential, and no figure per 100 leukocytes." in html
    assert "100.0" not in html and "0.0&ndash;0.0" not in html and "less precise" not in html
    assert "<p>No leukocytes counted.</p>" in html
    assert ('data-type="ERYTHROBLAST"><th scope="row">NRBC</th><td class="num">1</td>'
            '<td class="num">&ndash;</td>' in html)
    text = pdf_text(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)
    assert b"No leukocytes counted." in text and b"100.0" not in text
    rows = list(csv.reader(io.StringIO(client.get(reverse("lab:sample-export", args=[sample.pk])).content
                                       .decode())))
    assert ["TOTAL", "0", ""] in rows and ["per_100_leukocytes_NRBC", "1", ""] in rows
    assert all(row[2:] == ["", "", ""] for row in rows if row[:1] in (["NEUTROPHIL"], ["MONONUCLEAR"]))
    formula = client.get(reverse("lab:api-sample", args=[sample.pk])).json()["formula"]
    assert formula["total"] == 0
    assert formula["types"]["NEUTROPHIL"] == {"count": 0, "percent": None, "range_95": None}
    assert formula["per_100_leukocytes"]["NRBC"]["per_100_leukocytes"] is None
    # The sample page lists the erythroblast, without a figure per 100 of nothing.
    page = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    assert "1 cell, not yet a figure per 100 leukocytes (none counted)" in page


@pytest.mark.parametrize("types, expected", [
    (("NEUTROPHIL",), ["1 leukocyte counted,", "1 uncertain call was not reviewed."]),
    (("NEUTROPHIL", "LYMPHOCYTE"), ["2 leukocytes counted,", "2 uncertain calls were not reviewed."]),
])
def test_the_reports_warnings_count_in_words(client, tech, types, expected):
    sample = make_sample("H26-0050", types=types, confidence=0.6)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    for line in expected:
        assert line in html
    assert "(s)" not in html


@pytest.mark.parametrize(("zone", "said"), [
    ("Europe/Madrid", "2026-12-04 11:47 CET (UTC+01:00)"),
    # "IST" alone is Irish, Israeli or Indian time: the offset says which.
    ("Asia/Kolkata", "2026-12-04 16:17 IST (UTC+05:30)"),
    ("America/St_Johns", "2026-12-04 07:17 NST (UTC-03:30)"),
    # tzdata abbreviates São Paulo's time "-03": said once, as the offset.
    ("America/Sao_Paulo", "2026-12-04 07:47 (UTC-03:00)"),
    ("UTC", "2026-12-04 10:47 UTC"),
])
def test_times_on_the_report_say_their_zone(client, tech, hematologist, settings, zone, said):
    # A report leaves the lab: "Signed ... on 10:47" must say in which time zone.
    import datetime

    settings.TIME_ZONE = zone
    sample = mark_signed(make_sample("H26-0050", types=TYPES), hematologist)
    Sample.objects.filter(pk=sample.pk).update(
        signed_at=datetime.datetime(2026, 12, 4, 10, 47, tzinfo=datetime.UTC))
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert f"on {said}" in html and "(UTC+00:00)" not in html
    text = " ".join(pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content))
    assert f"on {said}" in text


def test_the_samples_note_is_on_the_report_and_a_long_type_says_how_many_it_shows(client, tech):
    sample = make_sample("H26-0048", types=("NEUTROPHIL",) * 6 + ("LYMPHOCYTE",))
    Sample.objects.filter(pk=sample.pk).update(note="May-Grünwald-Giemsa, x100 oil\n<b>left shift?</b>")
    store_crops(sample)

    page = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert ('<strong>Note:</strong> <bdi>May-Grünwald-Giemsa, x100 oil<br>&lt;b&gt;left shift?&lt;/b&gt;'
            '</bdi>' in page)
    assert "Neutrophil (4 of 6 shown)" in page and "Lymphocyte (1)" in page

    text = " ".join(pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content))
    assert "Note: May-Grünwald-Giemsa, x100 oil <b>left shift?</b>" in text
    assert "Neutrophil (4 of 6 shown)" in text


def test_a_report_of_one_cell_photographs_says_how_it_was_counted(client, tech):
    sample = make_sample("H26-0049", types=("NEUTROPHIL", "LYMPHOCYTE"))
    said = "Counted from photographs of one white cell each"
    assert said not in client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    Sample.objects.filter(pk=sample.pk).update(photographs=Sample.Photographs.ONE_CELL_EACH)
    assert said in client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert said.encode() in pdf_text(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)


def test_the_pdf_prints_every_labs_script(client, tech, hematologist):
    # The audit's note printed as "■■■■■■■ ■■ ■■■■…; Ελληνικ■; ■■■■; ■ód■": built-in Helvetica has
    # nothing outside Latin-1, so on the signed PDF even why a result was corrected could not be read.
    note = "Окраска по Романовскому; Ελληνικά; 中文备注; Łódź"
    hematologist.first_name, hematologist.last_name = "Łucja", "Źródło-Петрова"
    hematologist.save()
    with_role(hematologist, "hematologist")
    sample = make_sample("ЛБ-0054-中", types=TYPES)
    Sample.objects.filter(pk=sample.pk).update(note=note)
    sign_sample(sample, hematologist, below_target_reason="Лейкопения; λευκοπενία; 白细胞减少")
    reopen_sample(sample, hematologist, "Клетка 3 — базофил; βασεόφιλο; 嗜碱性粒细胞; źle")
    review_cell(Cell.objects.get(image__sample=sample, index=2), "BASOPHIL", hematologist)
    sample = sign_sample(sample, hematologist, below_target_reason="Лейкопения; λευκοπενία; 白细胞减少")

    lines = pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)
    text = " ".join(" ".join(lines).split())  # a wrapped line ends in its space, or not
    for expected in ("Leukocyte differential \u2014 ЛБ-0054-中", f"Note: {note}",
                     "Signed by Łucja Źródło-Петрова on ",
                     "Signed below the target count of 100: Лейкопения; λευκοπενία; 白细胞减少",
                     "Amended after reopening by Łucja Źródło-Петрова on ",
                     "Клетка 3 — базофил; βασεόφιλο; 嗜碱性粒细胞; źle"):
        assert expected in text, (expected, lines)
    assert "Leukocyte differential ЛБ-0054-中 \u2014 Amended" in lines  # the footer
    assert "\ufffd" not in text, lines


def test_the_pdf_breaks_cjk_lines_and_marks_what_no_font_draws(client, tech):
    # CJK text has no spaces to break a line at: a long note ran off the page in one line.
    note = "末梢血涂片瑞氏染色" * 12 + " x\u200dy e\u0301 \U0001F600\ufe0f ｶﾀｶﾅ"
    sample = make_sample("H26-0055", types=TYPES)
    Sample.objects.filter(pk=sample.pk).update(note=note)
    lines = pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)
    start = next(index for index, line in enumerate(lines) if line.startswith("Note: "))
    held = [line for line in lines[start:start + 5] if "末" in line or "染" in line]
    assert len(held) >= 2  # each line as wide as the page, none off it
    # The joiner draws nothing and the emoji's colour selector nothing either; the accent goes on its
    # letter; the emoji, which no font here has, prints as U+FFFD; half-width katakana print full width.
    assert "".join(held) == f"Note: {'末梢血涂片瑞氏染色' * 12} x\u200dy é \ufffd\ufe0f カタカナ"


def test_the_report_says_which_types_only_a_person_finds_and_how_many_cells_one_saw(
        client, tech, hematologist):
    # No network here calls a blast: a blast it called "lymphocyte" with confidence is never flagged,
    # and the report's missing "Blast" row is no evidence of none. A reader must be told so, and how
    # many of the cells a person actually looked at.
    sample = make_sample("H26-0060", types=TYPES)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    said = ("Reactive lymphocytes, blasts, plasma cells and smudge cells are not called by the network: "
            "they are counted only where a person relabelled a cell; a person reviewed 0 of the 5 cells.")
    assert said in html
    review_cell(Cell.objects.get(image__sample=sample, index=2), "LYMPHOCYTE", tech)
    mark_signed(sample, hematologist)
    conclusion = client.get(reverse("lab:api-sample-fhir", args=[sample.pk])).json()["entry"][0]["resource"][
        "conclusion"]
    assert said.replace("0 of the 5", "1 of the 5") in conclusion


def test_a_binary_networks_report_names_only_the_types_its_reviewers_can_give(client, tech):
    # A binary network's reviewer cannot give "reactive lymphocyte" (review_types): such a cell is
    # counted as mononuclear, never "where a person relabelled a cell", as the report said.
    version = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    sample = make_sample("H26-0061", types=("MONONUCLEAR", "POLYNUCLEAR"), version=version)
    html = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert ("Blasts, plasma cells and smudge cells are not called by the network: they are counted only "
            "where a person relabelled a cell; a person reviewed 0 of the 2 cells.") in html
    assert "Reactive lymphocytes" not in html


def test_the_pdf_prints_right_to_left_text_joined_and_in_the_order_it_is_read(client, tech, hematologist):
    """ReportLab neither reorders nor joins Arabic: "أحمد" would print as "دمحأ", its letters apart and
    backwards. Each person's text is set in the sentence as the report page's <bdi> sets it."""
    hematologist.first_name, hematologist.last_name = "أحمد", "المصري"
    hematologist.save()
    with_role(hematologist, "hematologist")
    sample = make_sample("H26-0057", types=TYPES)
    Sample.objects.filter(pk=sample.pk).update(note="Giemsa; ملاحظة: صبغة 100x; Mañana 標本")
    sample = sign_sample(sample, hematologist, below_target_reason="عدد قليل — muestra escasa")

    lines = pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)
    # Letters in their joined forms (U+FE70-U+FEFF), each Arabic run drawn right to left: the name
    # reads أحمد المصري from the right; the note's Arabic words sit where they were typed, 100 after
    # them as a browser shows it; a reason that starts in Arabic is read from the right as a whole.
    for expected in ("Signed by \ufef1\ufeae\ufebc\ufee4\ufedf\ufe8d \ufeaa\ufee4\ufea3\ufe83 on ",
                     "Note: Giemsa; 100 \ufe94\ufed0\ufe92\ufebb :\ufe94\ufec8\ufea3\ufefc\ufee3x; "
                     "Mañana 標本",
                     "Signed below the target count of 100: muestra escasa \u2014 \ufede\ufef4\ufee0\ufed7 "
                     "\ufea9\ufeaa\ufecb"):
        assert any(expected in line for line in lines), (expected, lines)
    text = " ".join(lines)
    assert not any("\u0600" <= char <= "\u06ff" for char in text), lines  # no letter left unjoined
    assert "right-to-left" not in text
    page = client.get(reverse("lab:sample-report", args=[sample.pk])).content.decode()
    assert "ملاحظة: صبغة 100x" in page and "أحمد المصري" in page


def test_a_long_arabic_note_breaks_into_lines_that_read_on_from_the_top(client, tech):
    # Reordered as a whole and broken after, a note's first line would hold its last words.
    words = [f"{first}{second}ة" for first in "بتثجحخدذ" for second in "سشصضطظعغ"]
    sample = make_sample("ع-٢٠٢٦-59", types=TYPES)
    Sample.objects.filter(pk=sample.pk).update(note=" ".join(words))
    lines = pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)
    start = next(index for index, line in enumerate(lines) if line.startswith("Note: "))
    held = [lines[start].removeprefix("Note: ")]
    held += [line for line in lines[start + 1:] if line and "\ufe70" <= line[0] <= "\ufeff"]
    assert len(held) >= 3, lines
    # Each line, its joined forms undone (NFKC) and read right to left, continues the one above it.
    read = [unicodedata.normalize("NFKC", line)[::-1] for line in held]
    assert " ".join(read) == " ".join(words)
    # The accession, in the title and in the footer of every page, reads from the right as well.
    assert "Leukocyte differential \u2014 59-٢٠٢٦-\ufec9" in lines
    assert any(line.startswith("Leukocyte differential 59-٢٠٢٦-\ufec9 \u2014 ") for line in lines), lines


def test_a_pdf_note_in_scripts_written_left_to_right_prints_as_typed(client, tech):
    sample = make_sample("H26-0058", types=TYPES)
    Sample.objects.filter(pk=sample.pk).update(note="Окраска; 標本; Mañana\nLine two")
    lines = pdf_lines(client.get(reverse("lab:sample-report-pdf", args=[sample.pk])).content)
    assert "Note: Окраска; 標本; Mañana" in lines and "Line two" in lines
