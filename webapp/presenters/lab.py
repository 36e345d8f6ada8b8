"""The lab pages' view models: the sample list, a sample's photographs with their cells drawn over
them and the formula beside them, and one cell's page."""

from dataclasses import dataclass, field

from django.core.paginator import Page
from django.urls import reverse

from classifier.boxes import holds_centre
from classifier.ood import review_flags
from webapp import wording
from webapp.cell_types import allowed_types, review_types, type_order, type_shortcuts
from webapp.counting import group_of, type_label
from webapp.models import Cell, Sample, SmearImage
from webapp.presenters import ViewModel
from webapp.presenters.formula import FormulaNotes, formula_notes
from webapp.review_flag import review_threshold, review_threshold_of
from webapp.selectors import (
    LeukocyteFormula,
    SampleCounts,
    SampleProgress,
    added_cell_requests,
    cell_number,
    class_names_by_version,
    current_counterpart,
    fitted_review_thresholds,
    label_stamp,
    leukocyte_formula,
    photograph_page_number,
    photographs_held_elsewhere,
    photographs_held_elsewhere_kept,
    sample_cell_counts,
    sample_images_with_cells,
    sample_photograph_page,
    sample_progress,
    stuck_images,
    unfamiliar_photograph,
    walk_cells,
)


@dataclass
class SampleRow:
    """One line of the sample list."""

    sample: Sample  # with the progress counts of selectors.samples_with_progress
    counts: SampleCounts


def sample_rows(samples):
    """The rows of one page of the sample list, its cell counts in one query."""
    samples = list(samples)
    counts = sample_cell_counts(sample.pk for sample in samples)
    return [SampleRow(sample, counts.get(sample.pk, SampleCounts())) for sample in samples]


@dataclass
class CellMark:
    """A cell as the sample page outlines it on its photograph and lists it below."""

    cell: Cell
    group: str  # MONONUCLEAR / POLYNUCLEAR of the type it counts as; "" for an artefact
    review_types: list  # (type, shortcut key) a reviewer may give it
    label_y: int  # baseline of its label, in photograph pixels


@dataclass
class Photograph:
    """One photograph of a sample, with the cells its formula counts."""

    image: SmearImage
    cells: list  # CellMark, by number (the photograph's centre outwards)
    stalled: bool  # no live task will finish it: queued too long, or its worker stopped
    label_size: int  # font size of the cell labels, in photograph pixels
    address: str  # its card on the sample page (photograph_address), where a review returns to
    # Most of its cells are unlike those the network was trained on (selectors.unfamiliar_photograph).
    unfamiliar: bool = False
    # Boxes a reviewer drew on it (AddedCellRequest): waiting for the worker, or lately failed.
    added_boxes: list = field(default_factory=list)
    # Accession numbers of other samples that hold the same photograph: a possible mix-up, said
    # on the page for as long as it is so, not only when it was uploaded.
    held_elsewhere: list = field(default_factory=list)

    @property
    def cell_drawn_by_hand(self):
        return any(mark.cell.added_by_hand for mark in self.cells)

    @property
    def pending_boxes(self):
        return [box for box in self.added_boxes if box.status == box.Status.PENDING]

    @property
    def failed_boxes(self):
        return [box for box in self.added_boxes if box.status == box.Status.FAILED]


def sample_page_address(sample_id, page_number):
    """The address of a page of the sample page; the first is the sample page's own address."""
    page = f"?page={page_number}" if page_number > 1 else ""
    return f"{reverse('lab:sample-detail', args=[sample_id])}{page}"


def photograph_address(image, page_number=None):
    """The address of the photograph's card: the page of the sample page that shows it (its
    number where known, else looked up), at the card."""
    if page_number is None:
        page_number = photograph_page_number(image)
    return f"{sample_page_address(image.sample_id, page_number)}#image-{image.pk}"


@dataclass
class PhotographPage:
    """Which of the sample's photographs the sample page shows, and the way to the others."""

    page: Page  # of photograph ids (selectors.sample_photograph_page)
    summary: str  # "Photographs 101-200 of 2,330"
    links: list  # page numbers to link, None where some are left out
    # Why this is not the page asked for, where it is not (no such page: the nearest is shown).
    note: str = ""

    @property
    def paged(self):
        return self.page.paginator.num_pages > 1


def _photograph_page(sample, asked):
    try:
        asked_number = int(asked)  # as Paginator reads it
    except (TypeError, ValueError):
        asked_number = None
    page = sample_photograph_page(sample, asked)
    paginator = page.paginator
    summary = (f"Photographs {page.start_index():,}-{page.end_index():,} of {paginator.count:,}"
               if paginator.count else "")
    shown = f"this is page {page.number} of {paginator.num_pages}."
    note = ""
    if asked_number is None and asked not in (None, ""):
        note = f"The page asked for is not a page number: {shown}"
    elif asked_number is not None and asked_number != page.number:
        note = f"There is no page {asked_number} of this sample's photographs: {shown}"
    links = [number if isinstance(number, int) else None
             for number in paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)]
    return PhotographPage(page, summary, links, note)


@dataclass
class SampleResults(ViewModel):
    """The results part of the sample page, which its script swaps in as photographs finish."""

    photographs: list  # of the page shown, or those asked for by id
    # None where photographs were asked for by id (one card, swapped in after a review).
    photograph_page: PhotographPage | None
    formula: LeukocyteFormula
    progress: SampleProgress
    review_types: list  # every (type, key) offered on the page, for the keyboard legend
    review_threshold_percent: str
    formula_notes: FormulaNotes  # which network counted and how each type counts
    # The page of the sample page these results are part of, which the sign-off panel's forms
    # return to (webapp.views.sign_off): a hematologist on page 3 stays there.
    page_number: int = 1


def _photograph(entry, shortcuts, stuck_ids, added_boxes, held_elsewhere, page_number):
    image = entry.image
    # Labels scale with the photograph so they read the same at any resolution.
    label_size = max(12, round(image.width / 38))
    marks = []
    for cell in entry.cells:
        # Above the box, or below it where the box touches the photograph's top edge.
        above = cell.y0 - 0.3 * label_size
        label_y = round(above if above >= label_size else cell.y1 + label_size)
        marks.append(CellMark(cell, group_of(cell.cell_type), shortcuts.get(cell.model_version_id, []),
                              label_y))
    return Photograph(image, marks, image.pk in stuck_ids, label_size,
                      photograph_address(image, page_number),
                      unfamiliar=unfamiliar_photograph(entry.cells),
                      added_boxes=added_boxes.get(image.pk, []),
                      held_elsewhere=held_elsewhere.get(image.pk, []))


def _review_threshold_text(version_ids):
    """The review thresholds of the networks that classified a sample, in percent: "85", or
    "80-85" where photographs were classified by networks with different ones."""
    fitted = fitted_review_thresholds(version_ids)
    percents = sorted({round(100 * review_threshold_of(value)) for value in fitted}) or [
        round(100 * review_threshold_of(None))
    ]
    return str(percents[0]) if len(percents) == 1 else f"{percents[0]}-{percents[-1]}"


def sample_results(sample, image_ids=None, page_number=None):
    """The sample page's results: the photographs of its page ``page_number`` (the first where
    None), or those of ``image_ids`` (what a review on one photograph changes, or the photographs
    the live refresh saw finish: none where those were on another page), beside the formula,
    progress and sign-off, which are the whole sample's."""
    # Read before the cells: the worker stores a drawn box's cell and marks the box done in one
    # commit, which may fall between the two reads. Read in this order, a page then shows the box
    # still waiting, and its cell (and fetches the card again until the box is done); read the other
    # way, neither, and the page stopped following, the cell missing until a reload.
    added_boxes = added_cell_requests(sample)
    if image_ids is None:
        photograph_page = _photograph_page(sample, page_number)
        images = sample_images_with_cells(sample, list(photograph_page.page.object_list))
    else:
        photograph_page = None
        images = sample_images_with_cells(sample, image_ids)
    # The review legend lists the types of every network that classified the sample, on any page.
    version_ids = set(sample.images.order_by().values_list("model_version_id", flat=True).distinct())
    version_ids.discard(None)
    # A cell can be relabelled only as one of the types of the network that classified it, a
    # basophil, or an artefact.
    shortcuts = {
        pk: type_shortcuts(sorted(review_types(names), key=type_order))
        for pk, names in class_names_by_version(version_ids).items()
    }
    stuck_ids = set(stuck_images().filter(sample=sample).values_list("pk", flat=True))
    legend = {pair for pairs in shortcuts.values() for pair in pairs}
    # An unsigned sample's sign-off panel searches the whole sample and keeps the answer: the page
    # reads its photographs from it rather than searching them again at every draw (9 ms a page).
    held_elsewhere = (photographs_held_elsewhere(sample, [entry.image.pk for entry in images])
                      if sample.is_signed else photographs_held_elsewhere_kept(sample))
    formula = leukocyte_formula(sample)
    asked_page, page_number = page_number, photograph_page.page.number if photograph_page else None
    # Asked for by id (one card after a review): the panel returns to that card's page; asked for
    # no card (a photograph off the page shown finished), to the page shown.
    shown_on = page_number or (photograph_page_number(images[0].image) if images
                               else sample_photograph_page(sample, asked_page).number)
    return SampleResults(
        photographs=[_photograph(entry, shortcuts, stuck_ids, added_boxes, held_elsewhere, page_number)
                     for entry in images],
        photograph_page=photograph_page,
        formula=formula,
        formula_notes=formula_notes(formula),
        progress=sample_progress(sample),
        review_types=sorted(legend, key=lambda pair: type_order(pair[0])),
        review_threshold_percent=_review_threshold_text(version_ids),
        page_number=shown_on,
    )


@dataclass
class CellPage(ViewModel):
    cell: Cell
    sample: Sample
    photograph_address: str  # its photograph's card on the sample page (photograph_address)
    probabilities: list  # (type, probability, percent), the most probable first
    review_types: list  # (type, shortcut key)
    counted_call: Cell | None  # for a superseded call, the call the formula counts instead
    previous_id: int | None  # neighbours in the sample (selectors.walk_cells)
    next_id: int | None
    position: int  # on its photograph, as the photograph's outlines number it
    sibling_count: int
    walk_position: int  # in the sample
    walk_count: int
    review_reasons: list  # why the call is flagged for review, in words; empty where it is not
    second_look: str  # where the call came from a second look at another magnification, in words
    label_seen: str  # selectors.label_stamp: the review form sends it back, refused if it changed since
    # Why it may not be relabelled until its photograph is classified again (Cell.awaits_another_reading).
    awaiting_another_reading: str = ""


def second_look_text(cell):
    """The call's second look (classifier.second_look) in words, where it gave the call."""
    if cell.view_factor == 1.0 or not cell.first_look_type:
        return ""
    first = f"{type_label(cell.first_look_type)}, {round(100 * cell.first_look_confidence)}%"
    return (f"Called from a second look at {cell.view_factor:g}x the scale read from the photograph's "
            f"red cells, the view the network found most familiar; at the red cells' scale it read "
            f"{first}.")


def review_reasons(cell):
    """Why the network's call on this cell was flagged for review: the worker's rule
    (classifier.ood.review_flags, and the photograph's quality in classifier.pipeline) applied
    again to what the cell and its photograph store."""
    if not cell.needs_review:
        return []
    reasons = []
    threshold = review_threshold(cell.model_version)
    scores = None if cell.ood_score is None else [cell.ood_score]
    (unsure,), (unfamiliar,) = review_flags([cell.confidence], scores, threshold)
    if unsure:
        reasons.append(f"its confidence, {round(100 * cell.confidence)}%, is under this network's review "
                       f"threshold of {round(100 * threshold)}%")
    elif cell.first_look_confidence is not None and cell.first_look_confidence < threshold:
        first = round(100 * cell.first_look_confidence)
        reasons.append(f"at the photograph's own scale its confidence, {first}%, was under this "
                       f"network's review threshold of {round(100 * threshold)}%")
    if cell.first_look_type and cell.first_look_type != cell.predicted_type:
        reasons.append(f"a second look at {cell.view_factor:g}x changed the network's call from "
                       f"{type_label(cell.first_look_type)}")
    if unfamiliar:
        reasons.append("it is unlike the cells the network was trained on")
    if cell.image.quality_warnings:
        reasons.append("its photograph's quality measures warn")
    if not cell.outlined:
        reasons.append("the detector found no cell outline on this photograph of one cell, and the "
                       "network classified its middle")
    elif (cell.image.sample.one_cell_each and not cell.added_by_hand
          and not holds_centre(cell.box, cell.image.width, cell.image.height)):
        reasons.append("no cell outlined on this photograph of one cell covers its middle: this is the "
                       "one nearest it, which may be a neighbour of the cell photographed")
    if cell.added_by_hand:
        reasons.append("it was drawn by hand, and the network's call on a drawn box waits for a "
                       "person's label")
    if cell.review_carried_from_id and not cell.corrected_type:
        reasons.append("a reviewer's earlier label is not one of this network's types")
    return reasons or ["it was flagged when it was classified"]


def cell_page(cell):
    walked = walk_cells(cell)
    walk = [pk for pk, _ in walked]
    siblings = [pk for pk, image_id in walked if image_id == cell.image_id]
    position = walk.index(cell.pk)
    probabilities = sorted(cell.probabilities.items(), key=lambda item: -item[1])
    return CellPage(
        cell=cell,
        sample=cell.image.sample,
        photograph_address=photograph_address(cell.image),
        probabilities=[(name, p, round(p * 100, 1)) for name, p in probabilities],
        review_types=type_shortcuts(allowed_types(cell)),
        counted_call=current_counterpart(cell) if cell.is_superseded else None,
        previous_id=walk[position - 1] if position > 0 else None,
        next_id=walk[position + 1] if position + 1 < len(walk) else None,
        position=cell_number(cell, walked),
        sibling_count=len(siblings),
        walk_position=position + 1,
        walk_count=len(walk),
        review_reasons=review_reasons(cell),
        second_look=second_look_text(cell),
        label_seen=label_stamp(cell),
        awaiting_another_reading=(wording.awaiting_another_reading("relabel it")
                                  if cell.awaits_another_reading else ""),
    )
