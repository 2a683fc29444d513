"""The run lock: a run holds `<data>/locks/<run>.lock` from planning to publishing, so the same
manifest is never produced twice at once, on one machine or on several sharing a data dir URL.

The lock file is created exclusively (O_EXCL on a local disk, a conditional put on an object
store), so of two runs starting together exactly one gets it. A lock whose run died is taken over
once it is older than the stale age, or at once when its process is gone from this host.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

from stores.location import DataLocation

STALE_AGE_VARIABLE = "AVATARFLOW_RUN_LOCK_STALE_SECONDS"
"""Environment variable: age in seconds after which another run may take a lock over."""
DEFAULT_STALE_SECONDS = 24 * 3600.0


class RunLockedError(RuntimeError):
    """Another run holds the lock on this run name."""


@dataclass(frozen=True)
class RunLock:
    """A held lock: where its file is and the token that proves this run wrote it."""

    url: str
    """The lock file, `<data>/locks/<run>.lock`."""
    token: str
    """Random id written into the file; only the holder of the same token releases it."""


def lock_location(data_dir: str | DataLocation, run: str) -> DataLocation:
    return DataLocation(data_dir).join("locks", f"{run}.lock")


def stale_after_seconds() -> float:
    """The stale age from the environment, or the default (a day)."""
    text = os.environ.get(STALE_AGE_VARIABLE, "").strip()
    if not text:
        return DEFAULT_STALE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{STALE_AGE_VARIABLE} must be a positive number of seconds, got {text!r}")
    return value


def acquire_run_lock(data_dir: str | DataLocation, run: str, stale_after_s: float | None = None) -> RunLock:
    """Take the lock on `run`; RunLockedError when a live run holds it."""
    stale_after_s = stale_after_seconds() if stale_after_s is None else stale_after_s
    target = lock_location(data_dir, run)
    token = uuid.uuid4().hex
    record = {"run": run, "token": token, "host": socket.gethostname(), "pid": os.getpid(),
              "acquired_at": time.time()}
    for _ in range(3):  # a lock released or taken over meanwhile gets another try
        try:
            target.create_exclusive(json.dumps(record).encode("utf-8"))
            return RunLock(target.url, token)
        except FileExistsError:
            pass
        held = _read(target)
        if held is None:
            continue  # released between our create and our read
        _refuse_if_live(run, target, held, stale_after_s)
        if _read(target) == held:  # still the stale one, not a newer run's
            target.remove()
    raise RunLockedError(f"run {run!r}: another run took its lock {target.url} at the same moment")


def check_run_lock(data_dir: str | DataLocation, run: str, stale_after_s: float | None = None) -> None:
    """RunLockedError when a live run holds the lock on `run` now (a check before starting;
    acquire_run_lock is what decides)."""
    stale_after_s = stale_after_seconds() if stale_after_s is None else stale_after_s
    target = lock_location(data_dir, run)
    held = _read(target)
    if held is not None:
        _refuse_if_live(run, target, held, stale_after_s)


def _refuse_if_live(run: str, target: DataLocation, held: dict, stale_after_s: float) -> None:
    age = time.time() - held.get("acquired_at", 0.0)
    if age < stale_after_s and not _holder_is_gone(held):
        raise RunLockedError(
            f"run {run!r} is already being produced (lock {target.url}, taken {age:.0f} s ago by "
            f"{held.get('host', '?')} pid {held.get('pid', '?')}); wait for it to finish, or delete the "
            f"lock if that run died (a lock older than {stale_after_s:.0f} s is taken over)")


def release_run_lock(lock: RunLock) -> bool:
    """Delete the lock if it is still this run's; False when it was gone or taken over."""
    target = DataLocation(lock.url)
    held = _read(target)
    if held is None or held.get("token") != lock.token:
        return False
    return target.remove()


def _read(target: DataLocation) -> dict | None:
    """The lock's record; None when there is no lock. A file that is not a record (being written
    right now, or damaged) counts as taken when it was last modified."""
    try:
        text = target.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        try:
            written = target.modified_at()
        except FileNotFoundError:
            return None
        return {"acquired_at": written or time.time(), "unreadable": text}
    return record


def _holder_is_gone(held: dict) -> bool:
    """True when the lock was taken on this host by a process that no longer exists."""
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    if held["pid"] == os.getpid():
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False
