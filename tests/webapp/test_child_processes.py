"""A child started in a session of its own ends when the process that started it is killed outright."""

import os
import signal
import subprocess
import sys
import time

import pytest

from webapp.worker_process import REPO_ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

LAUNCHER = """
import subprocess, sys, time
from webapp.child_processes import ended_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         start_new_session=True, preexec_fn=ended_with_parent())
print(child.pid, flush=True)
time.sleep(120)
"""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A dead child not yet reaped by init reads as a zombie: ended all the same.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_a_child_in_its_own_session_ends_when_its_launcher_is_killed():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                text=True)
    child = int(launcher.stdout.readline())
    try:
        assert alive(child)
        launcher.kill()  # SIGKILL: no handler, no orderly stop
        launcher.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived its killed launcher"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
