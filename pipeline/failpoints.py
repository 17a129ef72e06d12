"""Named crash points, for the tests that kill the pipeline at its most delicate moments.

PIPELINE_FAILPOINTS="export:written,quantize:swapped" makes the process SIGKILL itself on reaching one of
those points: no exception handler, no `finally`, no atexit runs, as with a power cut or the OOM killer.
Unset (always, outside tests) a point costs one dictionary lookup.
"""

import os
import signal


def hit(name: str) -> None:
    wanted = os.environ.get("PIPELINE_FAILPOINTS")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
