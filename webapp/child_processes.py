"""Child processes that end when the process that started them ends, however it ends.

The site's launcher (`runlab`), the test suite and the latency bench start Celery workers, the web
server and Redis in sessions of their own, so that a Ctrl-C reaches them only through the launcher's
orderly stop. A launcher killed outright (SIGKILL, a timeout's kill, the OOM killer) has no stop to
run: its workers lived on, took the next run's photographs from the same Redis database and
classified them against a database that was gone. On Linux the kernel can send the child a signal
when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere the launcher's own stop is all there is.
"""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def ended_with_parent(signum=signal.SIGTERM):
    """A subprocess.Popen ``preexec_fn`` that has the child sent ``signum`` (SIGTERM: a Celery
    worker's warm stop, which hands an unfinished photograph back to the queue) when the process
    starting it dies; None where the system cannot (then Popen runs nothing)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    # Looked up here, in the parent: the child between fork and exec should take no lock another
    # thread of the parent may have held at the fork, as the dynamic loader's.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arrange():  # runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signum))
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signum)

    return arrange
