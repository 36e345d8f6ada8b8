"""The model folder: what train_cli writes, the bundled networks ship as and the site registers."""

import hashlib
import json

import pytest

from classifier import model_folder
from classifier.model_folder import (
    METADATA_FILE,
    MODEL_FILE,
    ModelFolderError,
    bundled_model_folders,
    read_metadata,
    read_model_folder,
    write_model_folder,
)


def test_a_written_folder_reads_back_with_its_hash_recorded(tmp_path):
    folder = write_model_folder(tmp_path / "run", b"network bytes", {"task": "binary", "temperature": 1.2})
    model_bytes, metadata = read_model_folder(folder)
    assert model_bytes == b"network bytes" == (folder / MODEL_FILE).read_bytes()
    assert metadata["task"] == "binary" and metadata["temperature"] == 1.2
    assert metadata["model_sha256"] == hashlib.sha256(b"network bytes").hexdigest()
    assert metadata["size_bytes"] == len(b"network bytes") and metadata["model_file"] == MODEL_FILE
    assert read_metadata(folder / METADATA_FILE) == read_metadata(folder) == metadata


def test_a_replaced_network_or_a_missing_file_is_refused_with_a_reason(tmp_path):
    folder = write_model_folder(tmp_path / "run", b"network bytes", {"task": "binary"})
    (folder / MODEL_FILE).write_bytes(b"another network")
    with pytest.raises(ModelFolderError, match="does not match the SHA-256"):
        read_model_folder(folder)
    (folder / MODEL_FILE).unlink()
    with pytest.raises(ModelFolderError, match="holds no readable network"):
        read_model_folder(folder)
    with pytest.raises(ModelFolderError, match=f"not a model folder: it holds no {METADATA_FILE}"):
        read_model_folder(tmp_path / "elsewhere")
    (folder / METADATA_FILE).write_text("{not json")
    with pytest.raises(ModelFolderError, match="cannot be read"):
        read_metadata(folder)


def test_the_default_bundled_model_is_listed_first(tmp_path):
    for name, default in (("alpha", False), ("beta", True), ("gamma", False)):
        write_model_folder(tmp_path / name, name.encode(), {"default": True} if default else {})
    (tmp_path / "notes").mkdir()  # no metadata: not a model
    assert [folder.name for folder in bundled_model_folders(tmp_path)] == ["beta", "alpha", "gamma"]
    assert bundled_model_folders(tmp_path / "absent") == []


def test_the_shipped_default_is_the_eight_type_network():
    folders = bundled_model_folders()
    if not folders:
        pytest.skip(f"no bundled model in {model_folder.BUNDLED_MODELS_DIR}")
    assert folders[0].name == "leukonet-gn-8class"
    assert json.loads((folders[0] / METADATA_FILE).read_text())["default"] is True
    # One default: the four-type network and the published binary one ship beside it.
    assert [json.loads((folder / METADATA_FILE).read_text()).get("default") for folder in folders[1:]] \
        == [None, None]


def test_a_damaged_network_whose_hash_was_recorded_with_it_is_refused_in_one_line(tmp_path, capsys):
    from classifier import fit_review_cli
    from classifier.inference import CellClassifier

    # Cut short before its metadata was written (train_cli's disk filled up): the recorded SHA-256
    # matches, so only the bytes themselves can say the archive is damaged.
    folder = write_model_folder(tmp_path / "cut", b"PK\x03\x04" + bytes(500),
                                {"class_names": ["A", "B"], "task": "binary", "input_spec": {}})
    with pytest.raises(ModelFolderError, match=r"cut: the network file is damaged or is no Keras archive"):
        CellClassifier.from_directory(folder)
    assert fit_review_cli.main(["--model", str(folder), "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "damaged" in error and "/tmp/tmp" not in error


def test_a_network_that_runs_out_of_disk_leaves_the_folder_it_replaces_whole(tmp_path):
    """A refit in place (the bundled networks are refitted so: MODEL_CARD.md) whose disk filled while
    model.keras was written left part of the new archive beside the old metadata.json: a folder
    that no longer reads back, the network it held lost. A file-size limit in a child process is
    the full disk here (Python ignores SIGXFSZ, so the write fails with EFBIG as with ENOSPC)."""
    import subprocess
    import sys
    import textwrap

    folder = write_model_folder(tmp_path / "run", b"old network", {"task": "binary"})
    script = textwrap.dedent(f"""
        import resource, sys
        from classifier.model_folder import write_model_folder
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        try:
            write_model_folder({str(folder)!r}, b"n" * (1 << 20), {{"task": "binary"}})
        except OSError as error:
            sys.exit(f"refused: {{error.strerror}}")
        """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode != 0 and "refused" in child.stderr, child.stderr
    assert read_model_folder(folder)[0] == b"old network"
    assert sorted(path.name for path in folder.iterdir()) == sorted([MODEL_FILE, METADATA_FILE])


def test_parts_a_killed_writer_left_are_removed_when_the_folder_is_next_written(tmp_path):
    """A writer killed between writing its parts and moving them into place (SIGKILL, a power cut)
    left .model.keras.PID.part and .metadata.json.PID.part in the folder for good: megabytes of a
    network each time, in a folder nothing else cleans. The next write removes them; a part whose
    writer still runs is its own."""
    import subprocess
    import sys
    import textwrap

    folder = write_model_folder(tmp_path / "run", b"old network", {"task": "binary"})
    script = textwrap.dedent(f"""
        import os, signal
        from classifier import model_folder
        model_folder.os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
        model_folder.write_model_folder({str(folder)!r}, b"new network", {{"task": "binary"}})
        """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr
    left = sorted(path.name for path in folder.iterdir() if path.name.endswith(".part"))
    assert len(left) == 2 and read_model_folder(folder)[0] == b"old network"
    running = folder / f".{MODEL_FILE}.1.part"  # init's: a writer that runs still
    running.write_bytes(b"half a network")

    write_model_folder(folder, b"new network", {"task": "binary"})
    assert sorted(path.name for path in folder.iterdir()) == sorted([MODEL_FILE, METADATA_FILE, running.name])
    assert read_model_folder(folder)[0] == b"new network"
    (folder / f".{METADATA_FILE}.999999999.part").write_text("{")  # no such process
    model_folder.write_metadata(folder, read_metadata(folder))
    assert sorted(path.name for path in folder.iterdir()) == sorted([MODEL_FILE, METADATA_FILE, running.name])
