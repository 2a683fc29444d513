"""Which stage failures Prefect tries again: raised errors (IO, a killed or hung Blender) yes,
a row's bad input (a Failed state returned by run_stage, or AvatarInputError) never."""

from __future__ import annotations

from prefect.states import Failed

from tasks.common.errors import AvatarInputError
from tasks.common.retries import IO_RETRIES, RENDER_RETRIES, retry_unless_bad_input
from tasks.render.runner import RenderError


def test_raised_errors_are_retried_and_bad_input_is_not():
    assert retry_unless_bad_input(None, None, Failed(data=RenderError("Blender job ran past its 1 s timeout")))
    assert retry_unless_bad_input(None, None, Failed(data=OSError("connection reset")))
    assert not retry_unless_bad_input(None, None, Failed(message="ingest: a.jpg: empty file"))  # run_stage's
    assert not retry_unless_bad_input(None, None, Failed(data=AvatarInputError("no face found")))


def test_io_and_render_stages_retry_and_compute_stages_do_not():
    from tasks.animate.task import animate_avatar
    from tasks.ingest.task import ingest_avatar
    from tasks.reconstruct.task import reconstruct_avatar
    from tasks.render.task import export_avatar, render_avatar

    assert (ingest_avatar.retries, render_avatar.retries) == (IO_RETRIES, RENDER_RETRIES) and IO_RETRIES >= 1
    assert export_avatar.retries == RENDER_RETRIES
    for task in (ingest_avatar, render_avatar, export_avatar):
        assert task.retry_condition_fn is retry_unless_bad_input
    assert reconstruct_avatar.retries == 0 and animate_avatar.retries == 0
