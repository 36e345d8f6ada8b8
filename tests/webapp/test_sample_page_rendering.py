"""The sample page's cells: each cell's outline on its photograph and its row in the table below,
with the classes, data-* attributes and links that sample.js and the browser tests read."""

import re

import pytest
from django.urls import reverse

from tests.webapp.lab_factories import make_sample, mark_signed
from webapp.models import Cell
from webapp.selectors import label_stamp

pytestmark = pytest.mark.django_db

HOSTILE = 'LAB_<b>"X"&\'Y'
HOSTILE_LABEL = "Lab &lt;b&gt;&quot;x&quot;&amp;&#x27;y"  # a lab's own type, labelled as counting does


def page(client, sample):
    """The sample page, without the whitespace between tags (which the browser ignores here)."""
    body = client.get(reverse("lab:sample-detail", args=[sample.pk])).content.decode()
    return re.sub(r">\s+<", "><", body)


def rows(body):
    return re.findall(r'<tr class="cellrow".*?</tr>', body, re.S)


def outlines(body):
    return re.findall(r'<g class="cellbox[^"]*" data-cell=.*?</g>', body, re.S)


def test_outlines_draw_each_box_with_its_number_type_and_review_state(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL"), confidence=0.9)
    first, unsure, reviewed, edge = sample.images.get().cells.order_by("index")
    Cell.objects.filter(pk=first.pk).update(y0=30)  # room for its label above the box
    Cell.objects.filter(pk=unsure.pk).update(needs_review=True)
    Cell.objects.filter(pk=reviewed.pk).update(needs_review=True, corrected_type="LYMPHOCYTE",
                                               cell_type="LYMPHOCYTE")
    Cell.objects.filter(pk=edge.pk).update(is_partial=True)
    drawn = outlines(page(client, sample))
    halo = '<polygon class="halo" points="{0}"></polygon><polygon points="{0}"></polygon>'.format
    assert drawn == [
        f'<g class="cellbox t-neutrophil" data-cell="{first.pk}">{halo("10,30 90,30 90,100 10,100")}'
        f'<text x="10" y="25" font-size="17">1 Neutrophil</text></g>',
        # The others' labels go below their boxes, which touch the photograph's top.
        f'<g class="cellbox t-lymphocyte flagged" data-cell="{unsure.pk}">'
        f'{halo("110,20 190,20 190,100 110,100")}'
        f'<text x="110" y="117" font-size="17">2 Lymphocyte ?</text></g>',
        f'<g class="cellbox t-lymphocyte reviewed" data-cell="{reviewed.pk}">'
        f'{halo("210,20 290,20 290,100 210,100")}'
        f'<text x="210" y="117" font-size="17">3 Lymphocyte ✓</text></g>',
        f'<g class="cellbox t-eosinophil edge" data-cell="{edge.pk}">{halo("310,20 390,20 390,100 310,100")}'
        f'<text x="310" y="117" font-size="17">4 Eosinophil</text></g>',
    ]
    # Counted in by a reviewer, an edge cell is drawn as any other.
    Cell.objects.filter(pk=edge.pk).update(count_partial=True)
    assert f'<g class="cellbox t-eosinophil" data-cell="{edge.pk}">' in page(client, sample)


def test_a_row_says_type_confidence_group_review_state_and_links_the_cell(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"), confidence=0.666)
    network_call, relabelled = sample.images.get().cells.order_by("index")
    Cell.objects.filter(pk=relabelled.pk).update(corrected_type="MONOCYTE", cell_type="MONOCYTE", crop="")
    first, second = rows(page(client, sample))
    address = reverse("lab:cell-detail", args=[network_call.pk])
    assert first.startswith(f'<tr class="cellrow" data-cell="{network_call.pk}" tabindex="-1" '
                            f'data-href="{address}"><td>1</td><td><img class="thumb" '
                            f'src="/media/cells/H26-0001-0.jpg" alt="" loading="lazy"></td>')
    assert '<td><span class="chip t-neutrophil">Neutrophil</span></td>' in first
    assert '<td class="num">67%</td><td class="muted">Polynuclear</td>' in first
    assert '<td><span class="badge flag">Needs review</span></td>' in first
    # The picture is decorative: the row says its number and type, and its link is "Open cell 1".
    assert first.endswith(f'<td><a href="{address}">Open<span class="visually-hidden"> cell 1</span></a>'
                          '</td></tr>')
    # A reviewer's label beside what the network said; no picture where the cell has none.
    assert "<td>2</td><td></td>" in second
    # Struck through, which a screen reader does not say: it says "the network said" (accessibility audit).
    assert ('<span class="chip t-monocyte">Monocyte</span><span class="was" title="The network said '
            'Lymphocyte"><span class="visually-hidden">, the network said </span>Lymphocyte</span></td>'
            ) in second
    assert '<td class="muted">Mononuclear</td><td><span class="badge reviewed">Reviewed</span></td>' in second


def test_the_cell_table_and_progress_bar_have_names_and_reviews_a_live_region(client, tech):
    sample = make_sample(types=("NEUTROPHIL",))
    body = page(client, sample)
    # No empty column header: the picture's and the link's say what they hold, to a screen reader.
    assert ('<thead><tr><th>#</th><th><span class="visually-hidden">Picture</span></th><th>Type</th>'
            in body)
    assert '<th><span class="visually-hidden">Cell page</span></th></tr></thead>' in body
    assert "<th></th>" not in re.search(r'<table class="cells">.*?</thead>', body).group()
    assert ('role="progressbar" aria-label="Photographs classified" aria-describedby="progress-text"'
            in body) and 'id="progress-text"' in body
    # A live region, so that a screen reader says when the photographs are classified (the
    # accessibility audit: only the bar's value changed, which is not read out).
    assert '<div class="progress-text" id="progress-text" role="status">' in body
    # The region sample.js says a review's outcome in lies outside what it swaps in after one.
    region = body.index('<p class="visually-hidden" id="review-status" role="status"></p>')
    assert region < body.index('id="results"') and region < body.index('id="sign-off"')


def test_a_row_carries_its_cells_marks(client, tech):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE"), ood_score=0.5)
    by_hand, edge, unfamiliar = sample.images.get().cells.order_by("index")
    Cell.objects.filter(pk=by_hand.pk).update(added_by_hand=True, ood_score=1.0)
    Cell.objects.filter(pk=edge.pk).update(is_partial=True, ood_score=None)
    Cell.objects.filter(pk=unfamiliar.pk).update(is_partial=True, count_partial=True, ood_score=1.66)
    first, second, third = rows(page(client, sample))
    assert ('<span class="badge added-by-hand" data-role="added-by-hand" title="A reviewer drew this box '
            'around a cell the detector missed">added by hand</span></td>') in first
    assert "edge-cell" not in first and "unfamiliar" not in first  # a score of 1 is still familiar
    assert ('<span class="badge edge-cell" data-role="edge-cell" title="The photograph\'s edge cuts this '
            'cell">edge, not counted</span></td>') in second
    assert ('<span class="badge edge-cell" data-role="edge-cell" title="The photograph\'s edge cuts this '
            'cell">edge, counted in</span><span class="badge unfamiliar-cell" data-role="unfamiliar-cell" '
            'title="Unlike the cells the network was trained on (score 1.7)">unfamiliar</span></td>') in third


def test_a_hostile_type_name_is_escaped_in_the_outlines_and_rows(client, tech):
    sample = make_sample(types=(HOSTILE, "NEUTROPHIL"))
    hostile, relabelled = sample.images.get().cells.order_by("index")
    Cell.objects.filter(pk=relabelled.pk).update(predicted_type=HOSTILE, corrected_type="NEUTROPHIL")
    body = page(client, sample)
    assert "<b>" not in body and '"X"' not in body and '"x"' not in body
    assert f'<g class="cellbox t-lab_&lt;b&gt;&quot;x&quot;&amp;&#x27;y" data-cell="{hostile.pk}">' in body
    assert f'font-size="17">1 {HOSTILE_LABEL}</text>' in body
    first, second = rows(body)
    assert f'<span class="chip t-lab_&lt;b&gt;&quot;x&quot;&amp;&#x27;y">{HOSTILE_LABEL}</span>' in first
    assert (f'<span class="was" title="The network said {HOSTILE_LABEL}"><span class="visually-hidden">, '
            f'the network said </span>{HOSTILE_LABEL}</span>') in second


def test_a_hostile_file_name_is_escaped_on_the_card(client, tech):
    sample = make_sample()
    sample.images.update(original_filename='<script>alert("x")</script>.png')
    body = page(client, sample)
    assert "<script>alert" not in body
    assert "<h2><bdi>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.png</bdi></h2>" in body


def test_only_a_reviewer_of_an_unsigned_sample_gets_the_type_buttons(client, tech, django_user_model):
    sample = make_sample(types=("NEUTROPHIL", "LYMPHOCYTE"))
    cell = sample.images.get().cells.get(index=0)
    image = sample.images.get()
    first = rows(page(client, sample))[0]
    back = f"{reverse('lab:sample-detail', args=[sample.pk])}#image-{image.pk}"
    assert re.search(
        rf'<td><form method="post" action="{reverse("lab:cell-review", args=[cell.pk])}" '
        rf'class="typebuttons review-form"><input type="hidden" name="csrfmiddlewaretoken" value="\w+">'
        rf'<input type="hidden" name="sample" value="{sample.pk}">'
        rf'<input type="hidden" name="next" value="{back}">'
        rf'<input type="hidden" name="seen" value="{label_stamp(cell)}">'
        rf'<button type="submit" name="cell_type" ', first)
    assert first.count('class="typebtn t-neutrophil current unconfirmed"') == 1
    assert first.endswith(f'</button></form></td><td><a href="{reverse("lab:cell-detail", args=[cell.pk])}">'
                          'Open<span class="visually-hidden"> cell 1</span></a></td></tr>')

    reader = django_user_model.objects.create_user("reader", password="a-long-passphrase-1")
    client.force_login(reader)  # a role-less account reads, and changes nothing
    assert all("<form" not in row and "<button" not in row for row in rows(page(client, sample)))

    client.force_login(tech)
    mark_signed(sample, tech)
    signed = rows(page(client, sample))
    assert all('<td><span class="muted small" data-role="locked">signed: locked</span></td>' in row
               and "<form" not in row for row in signed)
