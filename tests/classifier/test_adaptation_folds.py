"""An adaptation's cross-validation keeps each photograph's cells in one fold, and its progress
says which phase, fold and epoch within it a report is of, then that the TEST sets are measured."""

import dataclasses

import numpy as np
import pytest

from classifier.training import adaptation as adaptation_module
from classifier.training.adaptation import (
    PHASE_CROSS_VALIDATION,
    PHASE_EVALUATING,
    PHASE_FINAL,
    adapt_classifier,
    cross_validation_folds,
    stratified_folds,
)
from tests.classifier.test_adaptation import adaptation, base, write_windows  # noqa: F401 (fixture)


def synthetic_photographs(seed, photographs=40, types=4):
    """(labels, photograph of each cell): 1-6 cells a photograph, of mixed types, some types rarer."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for photograph in range(photographs):
        for _ in range(int(rng.integers(1, 7))):
            labels.append(int(rng.choice(types, p=[0.4, 0.3, 0.2, 0.1])))
            groups.append(f"photograph {photograph}")
    return np.array(labels), groups


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("folds", [2, 3, 5])
def test_no_photographs_cells_are_in_two_folds_and_types_stay_spread(seed, folds):
    labels, groups = synthetic_photographs(seed)
    assigned = stratified_folds(labels, folds, seed=seed, groups=groups)
    by_photograph = {}
    for group, fold in zip(groups, assigned, strict=True):
        by_photograph.setdefault(group, set()).add(int(fold))
    assert all(len(held) == 1 for held in by_photograph.values()), "a photograph split across folds"
    assert set(assigned.tolist()) == set(range(folds)), "every fold holds cells"
    # Stratified as far as whole photographs allow: each common type near its share in each fold.
    for label in (0, 1):
        share = np.bincount(assigned[labels == label], minlength=folds) / (labels == label).sum()
        assert np.all(np.abs(share - 1 / folds) < 0.12), share


def test_a_few_large_photographs_still_fill_every_fold():
    # Two photographs of many cells and three of one: no fold may be left without a photograph.
    labels = np.array([0] * 10 + [1] * 10 + [0, 1, 1])
    groups = ["a"] * 10 + ["b"] * 10 + ["c", "d", "e"]
    assigned = stratified_folds(labels, 5, seed=1, groups=groups)
    assert sorted(set(assigned.tolist())) == [0, 1, 2, 3, 4]
    assert len(set(assigned[:10].tolist())) == 1 and len(set(assigned[10:20].tolist())) == 1


def test_no_more_folds_than_photographs_and_none_from_one():
    assert cross_validation_folds(5, 3) == 3
    assert cross_validation_folds(5, 1) == 0, "one photograph cannot be held out from itself"
    assert cross_validation_folds(1, 10) == 0 and cross_validation_folds(5, 12) == 5


def test_an_adaptation_folds_by_photograph_and_reports_its_phase_fold_and_epoch(
        base, tmp_path, monkeypatch):  # noqa: F811 (the fixture imported above)
    cells = write_windows(tmp_path / "windows", 3, 21)  # 12 cells, 3 of each type
    # Four photographs, each holding three cells of different types.
    reviewed = [(path, name, f"photograph {k % 4}") for k, (path, name) in enumerate(cells)]
    seen = []
    real = adaptation_module.stratified_folds

    def spied(labels, folds, seed, groups=None):
        assigned = real(labels, folds, seed, groups=groups)
        seen.append((list(groups), assigned.tolist()))
        return assigned

    monkeypatch.setattr(adaptation_module, "stratified_folds", spied)
    reports = []
    result = adapt_classifier(dataclasses.replace(adaptation(base, reviewed), epochs=2),
                              on_epoch=reports.append)

    (groups, assigned), = seen
    photograph_of = dict(zip([path for path, _, _ in reviewed], [g for _, _, g in reviewed], strict=True))
    assert sorted(groups) == sorted(photograph_of.values())
    folds_of = {}
    for group, fold in zip(groups, assigned, strict=True):
        folds_of.setdefault(group, set()).add(fold)
    assert all(len(held) == 1 for held in folds_of.values()) and len(set(assigned)) == 2
    record = result.metrics["adaptation"]
    assert record["folds"] == 2 and record["photographs"] == 4 and record["cells"] == 12

    # The bar still counts every epoch; each report says where in the run it is.
    where = [(r["epoch"], r["epochs"], r["phase"], r["fold"], r["folds"], r["phase_epoch"],
              r["phase_epochs"]) for r in reports]
    assert where == [
        (1, 6, PHASE_CROSS_VALIDATION, 1, 2, 1, 2), (2, 6, PHASE_CROSS_VALIDATION, 1, 2, 2, 2),
        (3, 6, PHASE_CROSS_VALIDATION, 2, 2, 1, 2), (4, 6, PHASE_CROSS_VALIDATION, 2, 2, 2, 2),
        (5, 6, PHASE_FINAL, None, 2, 1, 2), (6, 6, PHASE_FINAL, None, 2, 2, 2),
        (6, 6, PHASE_EVALUATING, None, 2, None, 2),
    ]
    assert reports[2]["stage"] == "cross-validation fold 2 of 2"
    assert reports[-1]["stage"] == PHASE_EVALUATING == "evaluating on each source's TEST"
    assert reports[-1]["eta_seconds"] is None and "loss" not in reports[-1]
    assert reports[-2]["eta_seconds"] == 0
