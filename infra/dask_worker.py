"""`python -m infra.dask_worker SCHEDULER [dask worker options]`: the `dask worker` command with
glibc's malloc defaults kept (see `keep_glibc_malloc_defaults`), whose workers import the flow
modules as they start (`infra/worker_preload.py`); `serve`, the compose file and the cluster tests
start workers this way."""

from __future__ import annotations

import sys

from infra.profiles import WORKER_PRELOAD, keep_glibc_malloc_defaults


def main() -> None:
    keep_glibc_malloc_defaults()
    from distributed.cli.dask_worker import main as dask_worker_main

    sys.argv[0] = "dask worker"
    if "--preload" not in sys.argv:
        sys.argv += ["--preload", WORKER_PRELOAD]
    dask_worker_main()


if __name__ == "__main__":
    main()
