"""Errors that describe bad input. They end one avatar's row, never the batch."""

from __future__ import annotations

from typing import Any


class AvatarInputError(Exception):
    """An expected failure caused by a row's input; its message is shown to the user as is.
    `record` holds facts worth keeping in the stage's record (e.g. the latents tried)."""

    def __init__(self, message: str, record: dict[str, Any] | None = None):
        super().__init__(message)
        self.record = record or {}
