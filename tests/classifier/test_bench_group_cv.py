"""The repeated group hold-out benchmark, on a few drawn cells."""

import importlib.util
from pathlib import Path

import pytest

from tests.synthetic_cells import write_cell_folder

BENCH = Path(__file__).resolve().parents[2] / "bench" / "group_cv.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_group_cv_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_split_trains_on_its_own_held_out_files_and_the_summary_averages_them(
        tmp_path, monkeypatch, capsys):
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=8, test_per_class=1)
    bench = load_bench()
    config = dict(data_dir=str(data), architecture="paper", task="4class", epochs=1, batch_size=8)

    results = [bench.run_split(config, seed, tmp_path / "runs") for seed in (1, 2)]

    for result in results:
        assert 0.0 <= result.last_accuracy <= 1.0 and result.best_epoch == 1
        assert result.groups == 8, "files are held out until 15% of each class is: 2 of 8 a class"
        assert result.best_accuracy == pytest.approx(result.last_accuracy, abs=1e-6)
    figures = bench.summary(results)
    assert figures["last_accuracy_mean"] == pytest.approx(
        (results[0].last_accuracy + results[1].last_accuracy) / 2)
    assert figures["worst_last_accuracy"] == min(r.last_accuracy for r in results)

    # With two splits, "pooled over the others" is the other split alone: its own temperature.
    from classifier.training import validation_predictions

    predictions = [validation_predictions(r.run_dir, str(data)) for r in results]
    assert [p.split_seed for p in predictions] == [1, 2]
    assert all(len(p.images) == len(p.labels) == r.groups for p, r in zip(predictions, results, strict=True))
    rows = bench.calibration_by_split(results, predictions)
    for (pooled, pooled_ece, borrowed_ece), other in zip(rows, reversed(results), strict=True):
        assert pooled == pytest.approx(other.temperature, rel=1e-4)
        assert pooled_ece == pytest.approx(borrowed_ece, abs=1e-6)


def test_the_command_prints_every_split_the_spread_and_the_calibration(tmp_path, monkeypatch, capsys):
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data = write_cell_folder(tmp_path / "cells", per_class=8, test_per_class=1)
    argv = ["--data", str(data), "--arch", "paper", "--epochs", "1", "--batch-size", "8",
            "--splits", "2", "--keep", str(tmp_path / "runs")]
    assert load_bench().main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("at the last epoch") == 2 and "over 2 splits" in printed
    assert "mean ECE: pooled" in printed and "photographs mostly misclassified" in printed
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["split-101", "split-102"]


def test_a_missing_folder_is_one_line_not_a_traceback(tmp_path, capsys):
    assert load_bench().main(["--data", str(tmp_path / "none")]) == 2
    assert "dataset not found" in capsys.readouterr().err
