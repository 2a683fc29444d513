"""Numbers that settings take from environment variables, with one-line errors naming the variable."""

from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar("T")


def number_from_environment(name: str, parse: Callable[[str], T], default: T, meaning: str) -> T:
    """Environment variable `name` parsed by `parse` (int or float), or `default` when it is unset or
    blank. A value that does not parse raises ValueError: "`name` must be `meaning`, got '…'"."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{name} must be {meaning}, got {text!r}") from None
