"""A sample's report as a PDF (ReportLab platypus), with the content of the printable page: both
are drawn from one view model, webapp.presenters.report.SampleReport.

Every text that came from a person or a file (accession number, reasons, file names) is escaped
before ReportLab's paragraph markup reads it. A crop missing from storage is left out of the
gallery, never a reason to fail the report.

The page is set in DejaVu Sans (vendored in fonts/, embedded as a subset: Latin, Latin Extended,
Greek, Cyrillic and more), not in the built-in Helvetica, which draws a black box for anything
outside Latin-1. Chinese, Japanese and Korean runs are set in ReportLab's built-in CID fonts, which
the PDF names and the reader draws: ReportLab never falls back from one font to another by itself.
ReportLab neither reorders right-to-left text (Arabic, Hebrew) nor joins Arabic letters: a paragraph
that holds such text is broken into lines and put in the order it is seen here (reading_order).
"""

import bisect
import functools
import io
import re
import threading
import unicodedata
from pathlib import Path
from xml.sax.saxutils import escape, unescape

from django.core.files.storage import default_storage
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from webapp.counting import type_label
from webapp.reports.reading_order import (
    LINE_BREAK,
    Segment,
    holds_right_to_left,
    in_display_order,
    lines_in_display_order,
)
from webapp.wording import moment_on_a_report

FONTS = Path(__file__).resolve().parent / "fonts"
BODY, BOLD = "DejaVuSans", "DejaVuSans-Bold"
# ReportLab's built-in CID fonts for CJK. Chinese Song (Adobe-GB1: GBK's whole range) draws every
# unified Han character, simplified or traditional, Japanese kanji and Korean hanja included, kana and
# bopomofo: no text is lost when languages mix, at the price of Chinese glyph shapes for Japanese.
# Hangul, which it lacks, takes the Korean Gothic.
CJK, HANGUL = "STSong-Light", "HYGothic-Medium"
# The code points each one's character collection holds, as its UCS-2 CMap maps them (checked with
# poppler's copies of Adobe's CMaps). Another CJK character is drawn as its compatibility form
# (NFKC: a half-width katakana as the full-width one, a compatibility ideograph as the unified one).
_CJK_RANGES = sorted([
    *((first, last, CJK) for first, last in (
        (0x2E80, 0x2EF3), (0x3001, 0x3003), (0x3005, 0x3017), (0x301D, 0x301E), (0x3021, 0x3029),
        (0x3041, 0x3094), (0x309B, 0x309E), (0x30A1, 0x30FA), (0x30FC, 0x30FE), (0x3105, 0x312C),
        (0x31A0, 0x31B7), (0x3220, 0x3229), (0x3400, 0x4DB5), (0x4E00, 0x9FA5), (0xFE30, 0xFE30),
        (0xFE49, 0xFE4F), (0xFF01, 0xFF5E), (0xFFE0, 0xFFE5))),
    *((first, last, HANGUL) for first, last in (
        (0x3131, 0x318E), (0x3200, 0x321C), (0x3260, 0x327B), (0xAC00, 0xD7A3))),
])
_CJK_STARTS = [first for first, _, _ in _CJK_RANGES]
# What no font here draws (emoji, scripts DejaVu lacks, anything beyond the Basic Multilingual Plane)
# is printed as U+FFFD: a visible mark that something was there, not an empty box nor a character
# left out unseen. Beyond the BMP even what DejaVu has is replaced: ReportLab writes such a
# character's ToUnicode entry wrong, so its text would copy out of the PDF garbled.
REPLACEMENT = "\ufffd"
# A person's or a file's text in paragraph markup, escaped, between these two (private use: no font
# draws them, and _text takes them out of what it wraps): _paragraph sets it in its fonts, and in the
# order it is seen where the paragraph holds right-to-left text.
_OPEN, _CLOSE = "\ue000", "\ue001"
_ISOLATE = re.compile(f"{_OPEN}([^{_CLOSE}]*){_CLOSE}")
_MARKUP = re.compile(f"{_ISOLATE.pattern}|(</?b>|<br/>)|([^<{_OPEN}]+)")
# What a line broken here may lack against ReportLab's own measure of it, in points: a line it found
# too wide it would break again, and a right-to-left line broken after its reordering reads wrong.
LINE_SLACK = 1.0
_REGISTERING = threading.Lock()

CROP_SIZE = 18 * mm
_GRID = TableStyle([
    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
    ("FONTNAME", (0, 0), (-1, -1), BODY),
    ("FONTNAME", (0, 0), (-1, 0), BOLD),
    ("FONTSIZE", (0, 0), (-1, -1), 9),
    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
])


def _register_fonts():
    """Registers the fonts, once a process (reading the two TrueType files takes some 60 ms), and
    answers the code points DejaVu Sans draws in both weights. Locked: a second registration while a
    first request's PDF is being drawn would swap the font objects under it."""
    with _REGISTERING:
        return _registered()


@functools.cache
def _registered():
    regular, bold = TTFont(BODY, FONTS / "DejaVuSans.ttf"), TTFont(BOLD, FONTS / "DejaVuSans-Bold.ttf")
    for font in (regular, bold):
        pdfmetrics.registerFont(font)
    pdfmetrics.registerFontFamily(BODY, normal=BODY, bold=BOLD, italic=BODY, boldItalic=BOLD)
    for name in (CJK, HANGUL):
        pdfmetrics.registerFont(UnicodeCIDFont(name))
        # No bold CID face: <b> around a CJK run keeps its font rather than failing to find one.
        pdfmetrics.registerFontFamily(name, normal=name, bold=name, italic=name, boldItalic=name)
    both = set(regular.face.charToGlyph).intersection(bold.face.charToGlyph)
    return frozenset(code for code in both if code <= 0xFFFF)


def _cjk_font(code):
    index = bisect.bisect_right(_CJK_STARTS, code) - 1
    if index >= 0 and code <= _CJK_RANGES[index][1]:
        return _CJK_RANGES[index][2]
    return None


def _drawn(char, covered):
    """One character as (character, font) pairs that some font here draws: font None for DejaVu Sans."""
    font = _cjk_font(ord(char))
    if font or ord(char) in covered:
        return [(char, font)]
    if char.isspace():
        return [(char if char.isascii() else " ", None)]
    if unicodedata.category(char) in ("Cc", "Cf") or "VARIATION SELECTOR" in unicodedata.name(char, ""):
        # A control or format character (a direction mark) or a variation selector (an emoji's
        # colour form) only says how to show what is beside it: nothing to see of its own.
        return []
    compatible = unicodedata.normalize("NFKC", char)
    if compatible != char and all(_cjk_font(ord(c)) or ord(c) in covered for c in compatible):
        return [(c, _cjk_font(ord(c))) for c in compatible]
    return [(REPLACEMENT, None)]


def _runs(value):
    """`value` as (font, text) runs: font None for the text around it (DejaVu Sans, regular or bold),
    else the CID font of a CJK run."""
    covered = _register_fonts()
    runs = []
    for char in value:
        for shown, font in _drawn(char, covered):
            if runs and runs[-1][0] == font:
                runs[-1][1] += shown
            else:
                runs.append([font, shown])
    return [(font, text) for font, text in runs]


def _text(value):
    """A person's or a file's text, marked as such for _paragraph. Composed first (NFC): ReportLab
    does not place combining marks."""
    value = unicodedata.normalize("NFC", str(value))
    if not value:
        return ""
    return f"{_OPEN}{escape(value.replace(_OPEN, REPLACEMENT).replace(_CLOSE, REPLACEMENT))}{_CLOSE}"


def _in_fonts(value):
    """Plain text as paragraph markup: escaped, each CJK run in its CID font, a line break kept."""
    return "".join(escape(text) if font is None else f'<font name="{font}">{escape(text)}</font>'
                   for font, text in _runs(value)).replace(LINE_BREAK, "<br/>")


def _with_wrap(style, markup):
    """A paragraph that holds CJK breaks its lines between characters, as CJK text has no spaces to
    break at (a long note would run off the page); a word of another script in it still breaks at
    a space."""
    if f'<font name="{CJK}">' in markup or f'<font name="{HANGUL}">' in markup:
        return style.clone(f"{style.name}-cjk", wordWrap="CJK")
    return style


def _paragraph(markup, style):
    """A paragraph of the report: `markup` holds the report's words and _text's."""
    if any(holds_right_to_left(unescape(text)) for text in _ISOLATE.findall(markup)):
        return _ReadingOrderParagraph(markup, style)
    markup = _ISOLATE.sub(lambda found: _in_fonts(unescape(found[1])), markup)
    return Paragraph(markup, _with_wrap(style, markup))


def _segments(markup):
    bold = False
    for isolate, tag, text in _MARKUP.findall(markup):
        if tag in ("<b>", "</b>"):
            bold = tag == "<b>"
        elif tag:
            yield Segment(LINE_BREAK)
        else:
            yield Segment(unescape(isolate or text), bold, isolate=bool(isolate))


class _ReadingOrderParagraph(Flowable):
    """A paragraph that holds right-to-left text: broken into lines for the width it is given, each
    line in the order it is seen (reading_order), then set by ReportLab as lines it need not break."""

    def __init__(self, markup, style):
        super().__init__()
        self._segments = list(_segments(markup))
        self._style = style
        self._laid_out = None

    def _measure(self, text, bold):
        font = BOLD if bold or self._style.fontName == BOLD else BODY
        return sum(pdfmetrics.stringWidth(run, cjk or font, self._style.fontSize) for cjk, run in _runs(text))

    def _paragraph_for(self, width):
        if self._laid_out is None or self._laid_out[0] != width:
            style = self._style
            room = width - style.leftIndent - style.rightIndent - max(style.firstLineIndent, 0) - LINE_SLACK
            lines = lines_in_display_order(self._segments, room, self._measure)
            markup = "<br/>".join("".join(f"<b>{_in_fonts(text)}</b>" if bold else _in_fonts(text)
                                          for text, bold in line) for line in lines)
            self._laid_out = (width, Paragraph(markup, _with_wrap(style, markup)))
        return self._laid_out[1]

    def wrap(self, availWidth, availHeight):
        return self._paragraph_for(availWidth).wrap(availWidth, availHeight)

    def split(self, availWidth, availHeight):
        return self._paragraph_for(availWidth).split(availWidth, availHeight)

    def draw(self):
        self._laid_out[1].drawOn(self.canv, 0, 0)

    def getSpaceBefore(self):
        return self._style.spaceBefore

    def getSpaceAfter(self):
        return self._style.spaceAfter


def _table(rows, widths):
    table = Table(rows, colWidths=widths, hAlign="LEFT", repeatRows=1)
    table.setStyle(_GRID)
    return table


def _crop(cell):
    try:
        with default_storage.open(cell.crop.name, "rb") as stored:
            data = io.BytesIO(stored.read())
        return Image(data, width=CROP_SIZE, height=CROP_SIZE, kind="proportional")
    except (OSError, ValueError):
        return None


def _status(report, styles):
    if report.signed:
        line = f"Signed by {_text(report.signed_by) or 'unknown'} on {moment_on_a_report(report.signed_at)}"
        if report.amended:
            line += f" \u2014 <b>amended</b> (signed {report.times_signed} times)"
        flowables = [_paragraph(line, styles["Normal"])]
        if report.amended_because:
            flowables.append(_paragraph(
                f"Amended after reopening by {_text(report.reopened_by) or 'unknown'} on "
                f"{moment_on_a_report(report.reopened_at)}: {_text(report.amended_because)}",
                styles["Normal"]))
        if report.changes_line:
            flowables.append(_paragraph(_text(report.changes_line), styles["Normal"]))
        return flowables
    flowables = [_paragraph(f"<b>{report.result.label}</b>", styles["banner"])]
    if report.reopened:
        flowables.append(_paragraph(
            f"Reopened by {_text(report.reopened_by)} on {moment_on_a_report(report.reopened_at)}: "
            f"{_text(report.reopen_reason)}", styles["Normal"]))
    if report.changes_line:
        flowables.append(_paragraph(_text(report.changes_line), styles["Normal"]))
    return flowables


def _differential(report, styles):
    story = [_paragraph("Differential", styles["Heading2"])]
    if not report.differential:
        return story + [_paragraph("No leukocytes counted.", styles["Normal"])]
    rows = [["Type", "Count", "%", "95% range"]]
    rows += [[figure.label, figure.count, f"{figure.value:.1f}", f"{figure.low}\u2013{figure.high}"]
             for figure in report.differential]
    rows.append(["Total", report.formula.total, "100.0", ""])
    story.append(_table(rows, [60 * mm, 20 * mm, 20 * mm, 35 * mm]))
    if report.groups:
        story.append(Spacer(1, 3 * mm))
        rows = [["Group", "Count", "%", "95% range"]]
        rows += [[type_label(row.name), row.count, f"{row.percent:.1f}", f"{row.low}\u2013{row.high}"]
                 for row in report.groups]
        story.append(_table(rows, [60 * mm, 20 * mm, 20 * mm, 35 * mm]))
    return story


def _beside(report, styles):
    story = []
    if report.per_100:
        story.append(_paragraph("Per 100 leukocytes", styles["Heading2"]))
        rows = [["Figure", "Count", "/100 WBC"]]
        rows += [[figure.label, figure.count, "\u2013" if figure.value is None else f"{figure.value:.1f}"]
                 for figure in report.per_100]
        story.append(_table(rows, [60 * mm, 20 * mm, 25 * mm]))
    apart = [f"{_text(label)}: {count}" for label, count in report.listed_apart]
    if report.unidentified:
        apart.append(f"Unidentified: {report.unidentified}")
    if report.partial_left_out:
        apart.append(f"Cut by the photograph's edge, left out: {report.partial_left_out}")
    if apart:
        story.append(_paragraph("Not counted", styles["Heading2"]))
        story.append(_paragraph("; ".join(apart), styles["Normal"]))
    return story


def _warnings(report, styles):
    if not report.warnings:
        return []
    story = [_paragraph("Warnings", styles["Heading2"])]
    story += [_paragraph(f"\u2022 {_text(warning)}", styles["Normal"]) for warning in report.warnings]
    return story


def _gallery(report, styles):
    rows = []
    for kind in report.gallery:
        pictures = [picture for picture in map(_crop, kind.crops) if picture is not None]
        if pictures:
            rows.append([_paragraph(_text(kind.caption), styles["Normal"]), *pictures])
    if not rows:
        return []
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    table = Table(rows, colWidths=[45 * mm] + [CROP_SIZE + 2 * mm] * (width - 1), hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
    return [KeepTogether([_paragraph("Cells of each type", styles["Heading2"]), table])]


def _networks(report, styles):
    if not report.versions:
        return []
    lines = "; ".join(_text(v.words) for v in report.versions)
    return [_paragraph(f"Classified by {lines}.", styles["small"])]


def _draw_line(canvas, x, y, value, size):
    """One line of text on the canvas from `x`, its CJK runs in their CID fonts."""
    line = canvas.beginText(x, y)
    for font, text in _runs(value):
        line.setFont(font or BODY, size)
        line.textOut(text)
    canvas.drawText(line)


def render_pdf(report):
    """The report as PDF bytes (A4)."""
    _register_fonts()
    styles = getSampleStyleSheet()
    styles["Normal"].fontName = BODY
    styles["Title"].fontName = styles["Heading2"].fontName = BOLD
    styles.add(styles["Normal"].clone("banner", textColor=colors.white, backColor=colors.HexColor("#b3261e"),
                                      fontSize=12, leading=16, borderPadding=4, spaceAfter=6))
    styles.add(styles["Normal"].clone("small", fontSize=8, leading=10, textColor=colors.grey))
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
        bottomMargin=16 * mm, title=f"Leukocyte differential {report.accession}",
        author="Leukoscope", pageCompression=1,
    )
    story = [_paragraph(f"Leukocyte differential \u2014 {_text(report.accession)}", styles["Title"])]
    story += _status(report, styles)
    if report.note:
        story.append(_paragraph(f"<b>Note:</b> {_text(report.note)}", styles["Normal"]))
    if report.photographs_note:
        story.append(_paragraph(_text(report.photographs_note), styles["Normal"]))
    if report.below_target_reason:
        story.append(_paragraph(f"Signed below the target count of {report.target_count}: "
                                f"{_text(report.below_target_reason)}", styles["Normal"]))
    story += _warnings(report, styles)
    story += _differential(report, styles)
    story += _beside(report, styles)
    story += _gallery(report, styles)
    story.append(Spacer(1, 4 * mm))
    story += _networks(report, styles)
    story.append(_paragraph(f"Printed {moment_on_a_report(report.generated_at)}", styles["small"]))

    def footer(canvas, page):
        # A page that comes loose from the others still says whose result it is, and how final.
        canvas.saveState()
        canvas.setFont(BODY, 8)
        canvas.setFillColor(colors.grey)
        accession = in_display_order(unicodedata.normalize("NFC", report.accession))
        _draw_line(canvas, 18 * mm, 9 * mm,
                   f"Leukocyte differential {accession} \u2014 {report.result.label}", 8)
        canvas.drawRightString(A4[0] - 18 * mm, 9 * mm, f"Page {page.page}")
        canvas.restoreState()

    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
