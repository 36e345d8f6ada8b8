"""A sample's report as a PDF (ReportLab platypus), with the content of the printable page: both
are drawn from one view model, webapp.presenters.report.SampleReport.

Every text that came from a person or a file (accession number, reasons, file names) is escaped
before ReportLab's paragraph markup reads it. A crop missing from storage is left out of the
gallery, never a reason to fail the report.
"""

import io
from xml.sax.saxutils import escape

from django.core.files.storage import default_storage
from django.utils import formats, timezone
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from webapp.counting import type_label

CROP_SIZE = 18 * mm
_GRID = TableStyle([
    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
    ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
    ("FONTSIZE", (0, 0), (-1, -1), 9),
    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
])


def _when(moment):
    return formats.date_format(timezone.localtime(moment), "Y-m-d H:i T") if moment else ""


def _text(value):
    return escape(str(value))


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
        line = f"Signed by {_text(report.signed_by) or 'unknown'} on {_when(report.signed_at)}"
        if report.amended:
            line += f" \u2014 <b>amended</b> (signed {report.times_signed} times)"
        flowables = [Paragraph(line, styles["Normal"])]
        if report.amended_because:
            flowables.append(Paragraph(
                f"Amended after reopening by {_text(report.reopened_by) or 'unknown'} on "
                f"{_when(report.reopened_at)}: {_text(report.amended_because)}", styles["Normal"]))
        return flowables
    flowables = [Paragraph(f"<b>{report.result.label}</b>", styles["banner"])]
    if report.reopened:
        flowables.append(Paragraph(
            f"Reopened by {_text(report.reopened_by)} on {_when(report.reopened_at)}: "
            f"{_text(report.reopen_reason)}", styles["Normal"]))
    return flowables


def _differential(report, styles):
    story = [Paragraph("Differential", styles["Heading2"])]
    if not report.differential:
        return story + [Paragraph("No leukocytes counted.", styles["Normal"])]
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
        story.append(Paragraph("Per 100 leukocytes", styles["Heading2"]))
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
        story.append(Paragraph("Not counted", styles["Heading2"]))
        story.append(Paragraph("; ".join(apart), styles["Normal"]))
    return story


def _warnings(report, styles):
    if not report.warnings:
        return []
    story = [Paragraph("Warnings", styles["Heading2"])]
    story += [Paragraph(f"\u2022 {_text(warning)}", styles["Normal"]) for warning in report.warnings]
    return story


def _gallery(report, styles):
    rows = []
    for kind in report.gallery:
        pictures = [picture for picture in map(_crop, kind.crops) if picture is not None]
        if pictures:
            rows.append([Paragraph(_text(kind.caption), styles["Normal"]), *pictures])
    if not rows:
        return []
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    table = Table(rows, colWidths=[45 * mm] + [CROP_SIZE + 2 * mm] * (width - 1), hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
    return [KeepTogether([Paragraph("Cells of each type", styles["Heading2"]), table])]


def _networks(report, styles):
    if not report.versions:
        return []
    lines = "; ".join(f"{_text(v.label)} ({_text(v.architecture)}, {_text(v.task)})" for v in report.versions)
    return [Paragraph(f"Classified by {lines}.", styles["small"])]


def render_pdf(report, compress=True):
    """The report as PDF bytes (A4). `compress=False` leaves the page text readable in the file."""
    styles = getSampleStyleSheet()
    styles.add(styles["Normal"].clone("banner", textColor=colors.white, backColor=colors.HexColor("#b3261e"),
                                      fontSize=12, leading=16, borderPadding=4, spaceAfter=6))
    styles.add(styles["Normal"].clone("small", fontSize=8, leading=10, textColor=colors.grey))
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
        bottomMargin=16 * mm, title=f"Leukocyte differential {report.accession}",
        author="Leukoscope", pageCompression=1 if compress else 0,
    )
    story = [Paragraph(f"Leukocyte differential \u2014 {_text(report.accession)}", styles["Title"])]
    story += _status(report, styles)
    if report.note:
        story.append(Paragraph(f"<b>Note:</b> {_text(report.note)}".replace("\n", "<br/>"), styles["Normal"]))
    if report.photographs_note:
        story.append(Paragraph(_text(report.photographs_note), styles["Normal"]))
    if report.below_target_reason:
        story.append(Paragraph(f"Signed below the target count of {report.target_count}: "
                               f"{_text(report.below_target_reason)}", styles["Normal"]))
    story += _warnings(report, styles)
    story += _differential(report, styles)
    story += _beside(report, styles)
    story += _gallery(report, styles)
    story.append(Spacer(1, 4 * mm))
    story += _networks(report, styles)
    story.append(Paragraph(f"Printed {_when(report.generated_at)}", styles["small"]))

    def footer(canvas, page):
        # A page that comes loose from the others still says whose result it is, and how final.
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(18 * mm, 9 * mm, f"Leukocyte differential {report.accession} \u2014 "
                                           f"{report.result.label}")
        canvas.drawRightString(A4[0] - 18 * mm, 9 * mm, f"Page {page.page}")
        canvas.restoreState()

    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
