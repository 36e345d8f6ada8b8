"""History: every classified cell, newest first, filtered and paginated in a constant number of queries."""

from datetime import date, timedelta

import pytest
from django.core.paginator import EmptyPage
from django.urls import reverse
from django.utils import timezone

from tests.webapp.lab_factories import make_sample, make_version
from webapp.forms import HistoryFilterForm
from webapp.models import Cell
from webapp.selectors import CappedPaginator, HistoryFilters, cell_history

pytestmark = pytest.mark.django_db


@pytest.fixture
def records():
    old_version = make_version(status="ready")
    new_version = make_version()
    a = make_sample("A-1", types=("NEUTROPHIL", "LYMPHOCYTE"), version=old_version, confidence=0.95)
    b = make_sample("B-2", types=("EOSINOPHIL", "NEUTROPHIL", "MONOCYTE"), version=new_version,
                    confidence=0.6)
    week_ago = timezone.now() - timedelta(days=7)
    Cell.objects.filter(image__sample=a).update(created_at=week_ago)
    Cell.objects.filter(image__sample=b, index=2).update(corrected_type="LYMPHOCYTE", cell_type="LYMPHOCYTE")
    return {"a": a, "b": b, "old": old_version, "new": new_version, "week_ago": week_ago}


def ids(queryset):
    return [(cell.image.sample.accession_number, cell.index) for cell in queryset]


def test_newest_first(records):
    assert ids(cell_history()) == [("B-2", 2), ("B-2", 1), ("B-2", 0), ("A-1", 1), ("A-1", 0)]


@pytest.mark.parametrize("filters, expected", [
    (HistoryFilters(cell_type="NEUTROPHIL"), [("B-2", 1), ("A-1", 0)]),
    (HistoryFilters(cell_type="LYMPHOCYTE"), [("B-2", 2), ("A-1", 1)]),  # the reviewed label counts
    (HistoryFilters(confidence_min=0.9), [("A-1", 1), ("A-1", 0)]),
    (HistoryFilters(confidence_max=0.7), [("B-2", 2), ("B-2", 1), ("B-2", 0)]),
    (HistoryFilters(reviewed="yes"), [("B-2", 2)]),
    (HistoryFilters(reviewed="no", accession="B-2"), [("B-2", 1), ("B-2", 0)]),
    (HistoryFilters(needs_review="no"), [("A-1", 1), ("A-1", 0)]),
    (HistoryFilters(accession="A-1"), [("A-1", 1), ("A-1", 0)]),
])
def test_filters(records, filters, expected):
    assert ids(cell_history(filters)) == expected


def test_a_group_finds_every_type_in_it_and_the_binary_networks_calls(records, client, tech):
    # Offered in the Type list, "Mononuclear" found the binary network's calls alone: never an
    # eight- or four-type network's lymphocytes and monocytes, which the formula groups under it.
    binary = make_version(class_names=("MONONUCLEAR", "POLYNUCLEAR"))
    make_sample("C-3", types=("MONONUCLEAR", "POLYNUCLEAR"), version=binary)
    mononuclear = ids(cell_history(HistoryFilters(cell_type="MONONUCLEAR")))
    assert mononuclear == [("C-3", 0), ("B-2", 2), ("A-1", 1)]
    polynuclear = ids(cell_history(HistoryFilters(cell_type="POLYNUCLEAR")))
    assert polynuclear == [("C-3", 1), ("B-2", 1), ("B-2", 0), ("A-1", 0)]
    page = client.get(reverse("lab:history"), {"cell_type": "MONONUCLEAR", "view": "table"}).content.decode()
    assert '<option value="MONONUCLEAR" selected>Mononuclear (any type in the group)</option>' in page
    assert client.get(reverse("lab:api-cells"), {"cell_type": "POLYNUCLEAR"}).json()["count"] == 4


def test_date_range_and_model_version(records):
    day = records["week_ago"].date()
    assert ids(cell_history(HistoryFilters(date_from=day, date_to=day))) == [("A-1", 1), ("A-1", 0)]
    assert len(cell_history(HistoryFilters(date_from=day + timedelta(days=1)))) == 3
    assert ids(cell_history(HistoryFilters(model_version=records["old"].pk))) == [("A-1", 1), ("A-1", 0)]
    assert ids(cell_history(HistoryFilters(model_version=make_version(status="ready").pk))) == []


def test_found_tells_the_detectors_cells_from_drawn_boxes_and_a_photographs_middle(client, tech, records):
    Cell.objects.filter(image__sample=records["b"], index=0).update(added_by_hand=True)
    Cell.objects.filter(image__sample=records["a"], index=1).update(outlined=False)
    assert ids(cell_history(HistoryFilters(found="hand"))) == [("B-2", 0)]
    assert ids(cell_history(HistoryFilters(found="middle"))) == [("A-1", 1)]
    assert ids(cell_history(HistoryFilters(found="detector"))) == [("B-2", 2), ("B-2", 1), ("A-1", 0)]
    page = client.get(reverse("lab:history"), {"found": "middle", "view": "table"}).content.decode()
    assert "Middle of a one-cell photograph" in page and "1 cell<" in page
    assert client.get(reverse("lab:api-cells"), {"found": "hand"}).json()["count"] == 1
    refused = client.get(reverse("lab:api-cells"), {"found": "somehow"})
    assert refused.status_code == 400 and "found" in refused.json()["errors"]


def test_the_last_representable_day_bounds_nothing(records):
    assert len(cell_history(HistoryFilters(date_to=date.max))) == 5


@pytest.mark.parametrize("field", ["date_from", "date_to"])
@pytest.mark.parametrize("value", ["9999-12-31", "1999-12-31", "2101-01-01"])
def test_filter_form_refuses_implausible_dates(field, value):
    form = HistoryFilterForm({field: value})
    assert not form.is_valid()
    assert form.errors[field] == [f"{value} is not a plausible date: give one between 2000 and 2100."]
    assert getattr(form.filters(), field) is None


def test_history_page_and_api_explain_an_implausible_date(client, tech, records):
    page = client.get(reverse("lab:history"), {"date_to": "9999-12-31"})
    assert page.status_code == 200
    assert "9999-12-31 is not a plausible date" in page.content.decode()
    assert page.context["page"].paginator.count == 5  # the rejected bound filters nothing
    # ... which the page says, so that the list is not read as filtered.
    assert page.context["filters_left_out"] == [
        ("To", "9999-12-31 is not a plausible date: give one between 2000 and 2100.")]
    assert ("Left out: To (9999-12-31 is not a plausible date: give one between 2000 and 2100.) The cells "
            "below are filtered on the other filters only.") in page.content.decode()
    reversed_range = client.get(reverse("lab:history"), {"confidence_min": "80", "confidence_max": "20"})
    # The upper bound, refused, and why: it said "could not be read" of a number read well.
    assert ("Left out: to % (The upper bound is below the lower one.) The cells below are filtered"
            in reversed_range.content.decode())
    from_80 = client.get(reverse("lab:history"), {"confidence_min": "80"}).context["page"].paginator.count
    assert reversed_range.context["page"].paginator.count == from_80 < 5  # on "from 80%" alone
    api = client.get(reverse("lab:api-cells"), {"date_to": "9999-12-31"})
    assert api.status_code == 400
    assert "not a plausible date" in api.json()["errors"]["date_to"][0]["message"]


def test_filter_form_turns_percent_into_probability(records):
    form = HistoryFilterForm({"confidence_min": "90", "confidence_max": "100", "cell_type": "LYMPHOCYTE",
                              "model_version": str(records["old"].pk)})
    assert form.is_valid(), form.errors
    filters = form.filters()
    assert (filters.confidence_min, filters.confidence_max) == (0.9, 1.0)
    assert filters.model_version == records["old"].pk


def test_filter_form_rejects_reversed_ranges(client, tech, records):
    response = client.get(reverse("lab:history"), {"confidence_min": "80", "confidence_max": "20"})
    assert response.status_code == 200
    assert "upper bound is below" in response.content.decode()


def test_history_page_filters_and_views(client, tech, records):
    response = client.get(reverse("lab:history"), {"cell_type": "EOSINOPHIL", "view": "table"})
    body = response.content.decode()
    assert response.status_code == 200
    assert body.count('class="chip t-eosinophil"') == 1
    assert "B-2" in body and "A-1" not in body.split("<tbody>")[1]
    grid = client.get(reverse("lab:history")).content.decode()
    assert grid.count('class="tile"') == 5


def test_history_page_runs_a_fixed_number_of_queries(client, tech, records, django_assert_max_num_queries):
    for n in range(3):
        make_sample(f"C-{n}", types=("NEUTROPHIL",) * 20, version=records["new"])
    # session + user + the account's permissions (its own and its groups', which the navigation
    # reads to offer New sample) + count + page + the page's samples + version choices + the
    # samples' sign-off facts (status, leukocytes, boxes still being classified): not one per
    # cell, never the model bytes.
    with django_assert_max_num_queries(12) as captured:
        response = client.get(reverse("lab:history"), {"reviewed": "no"})
    assert response.status_code == 200
    assert not any("model_bytes" in query["sql"] for query in captured.captured_queries)


def test_pagination_stops_counting_at_the_cap_not_paging(records):
    # The count stops at the cap; the pages go on as long as there are rows (they used to end at
    # the last page counted, "page 2 of many" with no way on to the oldest cells).
    paginator = CappedPaginator(cell_history(), per_page=2, cap=3)
    assert paginator.count == 4 and paginator.capped
    every = list(cell_history().values_list("pk", flat=True))
    page, seen = paginator.get_page(1), []
    while True:
        seen += [cell.pk for cell in page.object_list]
        if not page.has_next():
            break
        page = paginator.get_page(page.next_page_number())
    assert len(every) == 5 and seen == every
    assert page.number == 3 and (page.start_index(), page.end_index()) == (5, 5)
    with pytest.raises(EmptyPage):
        paginator.page(4)
    exact = CappedPaginator(cell_history(), per_page=2, cap=100)
    assert exact.count == 5 and not exact.capped
    with pytest.raises(EmptyPage):
        exact.page(4)


def test_history_pages_link_with_the_filters_kept(client, tech, records):
    for n in range(3):
        make_sample(f"D-{n}", types=("NEUTROPHIL",) * 20, version=records["new"])
    body = client.get(reverse("lab:history"), {"cell_type": "NEUTROPHIL"}).content.decode()
    assert "cell_type=NEUTROPHIL&amp;page=2" in body


def test_sample_list_shows_progress(client, tech, records):
    body = client.get(reverse("lab:sample-list")).content.decode()
    assert "A-1" in body and "B-2" in body and "Done" in body
    found = client.get(reverse("lab:sample-list"), {"q": "b-2"}).content.decode()
    assert "B-2" in found and "A-1" not in found


def test_admin_lists_the_lab_records_read_only(client, django_user_model, records):
    admin = django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1")
    client.force_login(admin)
    cell = Cell.objects.first()
    for name in ("sample", "smearimage", "cell", "cellreview"):
        assert client.get(reverse(f"admin:webapp_{name}_changelist")).status_code == 200
    page = client.get(reverse("admin:webapp_cell_change", args=[cell.pk])).content.decode()
    assert 'name="predicted_type"' not in page  # shown, not editable
    assert client.get(reverse("admin:webapp_cell_add")).status_code == 403


def test_deleting_a_sample_in_the_admin_removes_its_files(client, django_user_model, isolated_media_root,
                                                          django_capture_on_commit_callbacks):
    from pathlib import Path

    admin = django_user_model.objects.create_superuser("boss", password="a-long-passphrase-1")
    client.force_login(admin)
    sample = make_sample("DEL-1", types=("NEUTROPHIL",))
    crop = Path(isolated_media_root) / Cell.objects.get().crop.name
    crop.parent.mkdir(parents=True, exist_ok=True)
    crop.write_bytes(b"jpeg")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:webapp_sample_delete", args=[sample.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not crop.exists() and not Cell.objects.exists()


@pytest.mark.parametrize("view", ["grid", "table"])
def test_a_cell_the_edge_leaves_out_of_the_formula_is_marked(client, tech, view):
    sample = make_sample("E-1", types=("EOSINOPHIL", "NEUTROPHIL", "MONOCYTE", "ARTEFACT"))
    Cell.objects.filter(image__sample=sample, index=0).update(is_partial=True)
    Cell.objects.filter(image__sample=sample, index=1).update(is_partial=True, count_partial=True)
    # An artefact at the edge is reported as an artefact, as the formula reports it.
    Cell.objects.filter(image__sample=sample, index=3).update(is_partial=True)
    page = client.get(reverse("lab:history"), {"view": view}).content.decode()
    # Listed, as a current call, but not as one the formula counts; a counted-in edge cell is.
    assert page.count('data-role="edge-left-out"') == 1
    assert "the formula leaves it out unless a reviewer counts it in" in page
    assert '<option value="" selected>Current ones</option>' in page


def test_the_tables_picture_link_is_not_a_second_unnamed_stop(client, tech):
    make_sample("E-2", types=("EOSINOPHIL",))
    Cell.objects.update(crop="cells/e.jpg")
    page = client.get(reverse("lab:history"), {"view": "table"}).content.decode()
    # The type beside it links to the same cell, by name; the picture is skipped by keyboard and reader.
    assert 'tabindex="-1" aria-hidden="true"><img class="thumb small"' in page
