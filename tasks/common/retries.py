"""When a stage task is tried again. A stage that raised (a storage or network error, a Blender
job killed, hung past its timeout, or lost with its worker) may pass on another try; a stage that
returned Failed for its row's input (AvatarInputError) fails the same way every time, so it is
never retried."""

from __future__ import annotations

from tasks.common.errors import AvatarInputError

IO_RETRIES = 2
"""Tries after the first for stages that read inputs from disk or URLs (ingest)."""
RENDER_RETRIES = 1
"""Tries after the first for the render stage (a Blender process per try)."""
RETRY_DELAY_SECONDS = 2


def worth_retrying(error: object) -> bool:
    """A raised exception may pass on another try; bad input (AvatarInputError) never does."""
    return isinstance(error, BaseException) and not isinstance(error, AvatarInputError)


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry a raised exception, never bad input. run_stage returns a
    Failed state without an exception for bad input, and Prefect would otherwise retry that too."""
    return worth_retrying(state.data)
