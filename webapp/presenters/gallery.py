"""The cell gallery of one sample: every counted cell's crop in its type's row, the cells that need
a reviewer's eye first, and the formula beside it (CellaVision's main view)."""

from dataclasses import dataclass

from django.core.files.storage import default_storage
from django.utils.encoding import filepath_to_uri

from webapp.cell_types import review_types, type_order, type_shortcuts
from webapp.counting import Counting, rule_for
from webapp.models import Cell, Sample
from webapp.presenters import ViewModel
from webapp.presenters.formula import COUNTING_NOTES, FormulaNotes, formula_notes
from webapp.selectors import (
    LeukocyteFormula,
    SampleProgress,
    class_names_by_version,
    gallery_cells,
    leukocyte_formula,
    names_of_sample_cells,
    sample_progress,
)


@dataclass
class GalleryTile:
    cell: Cell
    name: str  # "Cell 3 on smear-12.jpg", as the sample page and the cell's own page name it
    awaiting_review: bool  # flagged by the network, no reviewer has labelled it yet
    left_out: bool  # cut by the photograph's edge and not counted in
    crop_url: str  # "" where the cell has no picture

    @property
    def reviewed(self):
        return bool(self.cell.corrected_type)


@dataclass
class GalleryRow:
    name: str
    label: str
    key: str  # the type's review shortcut
    counting: Counting
    note: str  # how the type counts, where it is not in the differential ("" where it is)
    tiles: list  # GalleryTile, awaiting review first, then by photograph and cell number
    shown: bool  # a type present or one the network calls; others wait hidden for the first cell

    @property
    def awaiting(self):
        return sum(tile.awaiting_review for tile in self.tiles)

    @property
    def left_out(self):
        return sum(tile.left_out for tile in self.tiles)


@dataclass
class GalleryPage(ViewModel):
    sample: Sample
    rows: list  # GalleryRow in the report's order
    legend: list  # (type, key) the keyboard relabels a selection with
    formula: LeukocyteFormula
    formula_notes: FormulaNotes
    progress: SampleProgress
    cell_count: int


def _legend(version_ids):
    """(type, key) for every type a reviewer may give the sample's cells, one type per key: where
    two types share a key (a sample of a binary and a typed network), the first in order keeps it."""
    names = {name for names in class_names_by_version(version_ids).values()
             for name in review_types(names)}
    pairs, keys = [], set()
    for name, key in type_shortcuts(sorted(names, key=type_order)):
        if key and key not in keys:
            keys.add(key)
            pairs.append((name, key))
    return pairs, names


def gallery_page(sample):
    cells = gallery_cells(sample)
    formula = leukocyte_formula(sample)
    version_ids = set(formula.model_versions) | {cell.model_version_id for cell in cells}
    legend, offered = _legend(version_ids)
    network_types = {name for names in class_names_by_version(version_ids).values() for name in names}
    # The media URL as FileSystemStorage.url writes it, without its urljoin per cell (a tenth of
    # the page's time at 500 cells).
    media = default_storage.base_url
    names = names_of_sample_cells(sample, cells)
    by_type = {}
    for cell in cells:
        name = cell.crop.name if cell.crop else ""
        tile = GalleryTile(cell, names[cell.pk], cell.needs_review and not cell.corrected_type,
                           cell.is_partial and not cell.count_partial,
                           media + filepath_to_uri(name).lstrip("/") if name else "")
        by_type.setdefault(cell.cell_type, []).append(tile)
    rows = []
    for name in sorted(set(by_type) | offered | network_types, key=type_order):
        rule = rule_for(name)
        tiles = sorted(by_type.get(name, []), key=lambda tile: not tile.awaiting_review)  # stable
        rows.append(GalleryRow(
            name=name, label=rule.label, key=rule.key, counting=rule.counting,
            note="" if rule.in_differential else COUNTING_NOTES[rule.counting],
            tiles=tiles, shown=bool(tiles) or name in network_types,
        ))
    return GalleryPage(
        sample=sample, rows=rows, legend=legend, formula=formula,
        formula_notes=formula_notes(formula), progress=sample_progress(sample), cell_count=len(cells),
    )


def formula_panel(sample):
    """The formula part of the page alone, as the gallery's script swaps it in after a review."""
    formula = leukocyte_formula(sample)
    return {"sample": sample, "formula": formula, "formula_notes": formula_notes(formula),
            "progress": sample_progress(sample)}
