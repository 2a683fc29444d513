"""A worker preload for tests: an exit hook, registered when a worker starts, that writes the file
AVATARFLOW_TEST_EXIT_MARKER names, to show whether a worker's exit ran the hooks registered before
infra/worker_preload.py."""

import atexit
import os
from pathlib import Path


def _mark() -> None:
    Path(os.environ["AVATARFLOW_TEST_EXIT_MARKER"]).write_text(str(os.getpid()))


atexit.register(_mark)
