"""Read each avatar's settled task futures into one outcome: finished, or the first stage that failed."""

from __future__ import annotations

from prefect.futures import PrefectFuture

from tasks.common.rows import AvatarRow
from tasks.common.stage_chain import first_line


def row_outcome(row: AvatarRow, chain: dict[str, PrefectFuture]) -> dict:
    """Read a row's settled stages (in pipeline order); report its outputs, or the first failed stage
    and its message. Stages after a failed one were never submitted, so they are not in `chain`.
    Settling kept each state, so nothing here waits on a worker (which a stop may have killed)."""
    seconds: dict[str, float] = {}
    warnings: list[str] = []
    for stage, future in chain.items():
        state = future.state
        if state.is_completed():
            ref = future.result()
            seconds[stage] = ref.seconds
            warnings += ref.info.get("warnings", [])
            continue
        if not state.is_final():  # the worker process died (out of memory, a native crash)
            return {"id": row.id, "line": row.line, "status": "failed", "stage": stage,
                    "error": f"the worker running it died ({state.name})"}
        message = state.message or state.name
        # A chain's failed state names the stage that failed in it.
        if state.is_failed() and not any(message.startswith(f"{name}:") for name in chain):
            error = future.result(raise_on_failure=False)
            message = f"{stage}: {type(error).__name__}: {first_line(error)}"
        stage_name, _, error_text = message.partition(": ")
        return {"id": row.id, "line": row.line, "status": "failed", "stage": stage_name, "error": error_text or message}
    # Render wrote the video and poster; export, when it ran, the GLB and .blend.
    outputs = {kind: path for stage in ("render", "export") if stage in chain
               for kind, path in chain[stage].result().info["outputs"].items()}
    rendered = chain["render"].result().info
    return {"id": row.id, "line": row.line, "status": "complete", "seconds": seconds, "warnings": warnings,
            "outputs": outputs, "frames": rendered["frames"], "video_seconds": rendered["video_seconds"],
            "video_published_at": rendered.get("video_published_at")}
