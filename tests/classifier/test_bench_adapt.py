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


def test_the_draw_reviews_different_cells_and_none_that_test_shows(tmp_path):
    """Augmented copies of one original are one cell to a lab; an original TEST also shows is
    never drawn, so the adapted network is not scored on a cell it was tuned on."""
    root = write_cell_folder(tmp_path / "lab", per_class=6, test_per_class=1, seed=3)
    rows = ["split,class,file,original,group,same_cell_in_train"]
    for class_dir in sorted((root / "TRAIN").iterdir()):
        for index, path in enumerate(sorted(class_dir.iterdir())):
            # Three copies of each of two originals a class.
            rows.append(f"TRAIN,{class_dir.name},{path.name},o,{class_dir.name}-{index // 3},")
    for class_dir in sorted((root / "TEST").iterdir()):
        for path in class_dir.iterdir():
            rows.append(f"TEST,{class_dir.name},{path.name},o,{class_dir.name}-0,yes")
    (root / "originals.csv").write_text("\n".join(rows) + "\n")
    bench = load_bench("adapt")
    classes = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]

    picked = bench.stratified_cells(str(root), classes, 8)

    # Original 0 of every class is in TEST: only original 1 is left, one copy of it a class.
    assert len(picked) == 4
    assert sorted(image.group for image in picked) == [f"{name}-1" for name in classes]
