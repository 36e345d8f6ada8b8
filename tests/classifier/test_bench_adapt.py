"""bench/adapt.py on two tiny drawn sources: the leave-one-source-out network of one of them is
adapted on k of the other's cells and measured on both; a missing run is named, not a crash."""

from tests.classifier.test_bench_sources import load_bench
from tests.synthetic_cells import write_cell_folder


def test_adapting_a_network_to_the_source_it_never_saw_prints_the_table(tmp_path, monkeypatch, capsys):
    import classifier.dataset

    monkeypatch.setattr(classifier.dataset, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    first = write_cell_folder(tmp_path / "lab-a", per_class=5, test_per_class=2, seed=1)
    second = write_cell_folder(tmp_path / "lab-b", per_class=5, test_per_class=2, seed=2)
    sources = load_bench("sources")
    bench = load_bench("adapt")
    networks = tmp_path / "runs"
    # Only the network trained without lab-a (on lab-b) exists.
    sources.train_run([str(second)], networks / "lab-b",
                      dict(architecture="paper", task="4class", epochs=1, batch_size=8))
    picked = bench.stratified_cells(str(first), ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"], 6)
    assert sorted(i.class_name for i in picked)[:2] == ["EOSINOPHIL", "EOSINOPHIL"] and len(picked) == 6

    code = bench.main(["--data", str(first), "--data", str(second), "--networks", str(networks),
                       "--ks", "6", "--epochs", "1", "--replay-per-class", "2", "--max-test-per-class", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "missing run: " in out and "(the network trained without lab-b)" in out
    rows = [line for line in out.splitlines() if line.startswith("lab-a")]
    assert [line.split()[1] for line in rows] == ["0", "6"]
    assert "TEST lab-a" in out and "TEST lab-b" in out and "%" in rows[1]
