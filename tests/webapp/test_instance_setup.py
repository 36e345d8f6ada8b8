"""Reading the settings writes the machine's secret key where it is missing, once, for every process
to share (tests/webapp/test_production_config.py races several); `make setup` (manage.py
ensure_instance) makes the instance's folders too."""

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOW_KEY = "import webapp.settings as s; print(s.SECRET_KEY_KEPT, s.SECRET_KEY)"


def run_python(args, var_dir):
    env = dict(os.environ, LEUKOSCOPE_VAR_DIR=str(var_dir))
    for name in ("LEUKOSCOPE_SECRET_KEY", "DATABASE_URL", "LEUKOSCOPE_MEDIA_ROOT"):
        env.pop(name, None)
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)


def test_reading_the_settings_keeps_a_key_and_only_an_unwritable_folder_gets_the_warning(tmp_path):
    var_dir = tmp_path / "var"

    kept, key = run_python(["-c", SHOW_KEY], var_dir).stdout.split()
    assert kept == "True" and len(key) > 50
    assert (var_dir / "secret_key").read_text() == key
    assert run_python(["-c", SHOW_KEY], var_dir).stdout.split() == ["True", key], "the next process reads it"
    assert "leukoscope.W001" not in run_python(["manage.py", "check"], var_dir).stderr

    # Nothing can be made under /proc, not even by root (whom a read-only mode does not stop): a
    # key for each process alone, and the check says why.
    unwritable = Path("/proc/leukoscope-nope")
    kept, key = run_python(["-c", SHOW_KEY], unwritable).stdout.split()
    assert kept == "False" and len(key) > 50
    checked = run_python(["manage.py", "check"], unwritable)
    assert "leukoscope.W001" in checked.stderr and "LEUKOSCOPE_VAR_DIR" in checked.stderr


def test_ensure_instance_makes_the_folders_and_one_lasting_secret_key(tmp_path):
    var_dir = tmp_path / "var"

    run_python(["manage.py", "ensure_instance"], var_dir)

    key_file = var_dir / "secret_key"
    assert (var_dir / "media").is_dir()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    run_python(["manage.py", "ensure_instance"], var_dir)
    assert key_file.read_text() == key, "a second setup keeps the key (and every session signed with it)"
    assert run_python(["-c", SHOW_KEY], var_dir).stdout.split() == ["True", key]
    assert "leukoscope.W001" not in run_python(["manage.py", "check"], var_dir).stderr
