"""The run lock: a run holds `<data>/locks/<run>.lock` from planning to publishing, so the same
manifest is never produced twice at once, on one machine or on several sharing a data dir URL.

The lock is a lease. The lock file is created exclusively (O_EXCL on a local disk, a conditional
put on an object store), so of two runs starting together exactly one gets it. While the run lives,
a heartbeat thread rewrites the lease's `renewed_at`. A lease not renewed for the expiry time is
expired and may be taken over from any host, so a lock left by a killed run frees itself; a lease
whose process is gone from this host is taken over at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from stores.location import DataLocation

HEARTBEAT_VARIABLE = "AVATARFLOW_RUN_LOCK_HEARTBEAT_SECONDS"
"""Environment variable: seconds between two renewals of a held lease."""
EXPIRY_VARIABLE = "AVATARFLOW_RUN_LOCK_EXPIRY_SECONDS"
"""Environment variable: a lease not renewed for this many seconds may be taken over."""
STALE_AGE_VARIABLE = "AVATARFLOW_RUN_LOCK_STALE_SECONDS"
"""Older name of EXPIRY_VARIABLE, still read when that one is unset."""
DEFAULT_HEARTBEAT_SECONDS = 10.0
DEFAULT_EXPIRY_SECONDS = 60.0

log = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another run holds the lock on this run name."""


@dataclass(frozen=True)
class RunLock:
    """A held lock: where its file is and the token that proves this run wrote it."""

    url: str
    """The lock file, `<data>/locks/<run>.lock`."""
    token: str
    """Random id written into the file; only the holder of the same token renews or releases it."""
    lost: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    """Set when a renewal found the lease taken over by another run."""

    def __reduce__(self):  # an Event does not pickle; a copy sent elsewhere starts not lost
        return (RunLock, (self.url, self.token))


def lock_location(data_dir: str | DataLocation, run: str) -> DataLocation:
    return DataLocation(data_dir).join("locks", f"{run}.lock")


def _seconds_from_environment(names: tuple[str, ...], default: float) -> float:
    for name in names:
        text = os.environ.get(name, "").strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {text!r}")
        return value
    return default


def expiry_seconds() -> float:
    """The lease expiry from the environment, or the default (60 s)."""
    return _seconds_from_environment((EXPIRY_VARIABLE, STALE_AGE_VARIABLE), DEFAULT_EXPIRY_SECONDS)


def heartbeat_seconds() -> float:
    """The renewal interval from the environment, or the default (10 s)."""
    return _seconds_from_environment((HEARTBEAT_VARIABLE,), DEFAULT_HEARTBEAT_SECONDS)


stale_after_seconds = expiry_seconds  # the older name


def acquire_run_lock(data_dir: str | DataLocation, run: str, stale_after_s: float | None = None, *,
                     expiry_s: float | None = None) -> RunLock:
    """Take the lease on `run`; RunLockedError when a live run holds it. Nothing renews a lease
    taken here; hold_run_lock does."""
    expiry_s = expiry_s if expiry_s is not None else stale_after_s
    expiry_s = expiry_seconds() if expiry_s is None else expiry_s
    target = lock_location(data_dir, run)
    token = uuid.uuid4().hex
    now = time.time()
    record = {"run": run, "token": token, "host": socket.gethostname(), "pid": os.getpid(),
              "acquired_at": now, "renewed_at": now}
    for _ in range(3):  # a lock released or taken over meanwhile gets another try
        try:
            target.create_exclusive(json.dumps(record).encode("utf-8"))
            return RunLock(target.url, token)
        except FileExistsError:
            pass
        held = _read(target)
        if held is None:
            continue  # released between our create and our read
        _refuse_if_live(run, target, held, expiry_s)
        if _read(target) == held:  # still the expired one, not a newer run's
            target.remove()
    raise RunLockedError(f"run {run!r}: another run took its lock {target.url} at the same moment")


def check_run_lock(data_dir: str | DataLocation, run: str, stale_after_s: float | None = None, *,
                   expiry_s: float | None = None) -> None:
    """RunLockedError when a live run holds the lease on `run` now (a check before starting;
    acquiring is what decides)."""
    expiry_s = expiry_s if expiry_s is not None else stale_after_s
    expiry_s = expiry_seconds() if expiry_s is None else expiry_s
    target = lock_location(data_dir, run)
    held = _read(target)
    if held is not None:
        _refuse_if_live(run, target, held, expiry_s)


def renew_run_lock(lock: RunLock) -> bool:
    """Rewrite the lease's `renewed_at`; False (and `lock.lost` set) when it is no longer this
    run's. The read and the write are two steps, so a takeover between them is overwritten; the
    expiry being several heartbeats long makes that a lease that had already lapsed."""
    target = DataLocation(lock.url)
    held = _read(target)
    if held is None or held.get("token") != lock.token:
        lock.lost.set()
        return False
    target.write_bytes(json.dumps({**held, "renewed_at": time.time()}).encode("utf-8"))
    return True


def release_run_lock(lock: RunLock) -> bool:
    """Delete the lease if it is still this run's; False when it was gone or taken over."""
    target = DataLocation(lock.url)
    held = _read(target)
    if held is None or held.get("token") != lock.token:
        return False
    return target.remove()


@contextmanager
def hold_run_lock(data_dir: str | DataLocation, run: str, heartbeat_s: float | None = None,
                  expiry_s: float | None = None) -> Iterator[RunLock]:
    """Hold the lease on `run` for the block: acquire it (RunLockedError naming the live holder),
    renew it every `heartbeat_s` from a daemon thread, release it on the way out, also on an
    exception or Ctrl-C."""
    heartbeat_s = heartbeat_seconds() if heartbeat_s is None else heartbeat_s
    expiry_s = expiry_seconds() if expiry_s is None else expiry_s
    if not 0 < heartbeat_s < expiry_s:
        raise ValueError(f"the run lock's heartbeat ({heartbeat_s:g} s) must be positive and shorter "
                         f"than its expiry ({expiry_s:g} s)")
    lock = acquire_run_lock(data_dir, run, expiry_s=expiry_s)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            try:
                if not renew_run_lock(lock):
                    log.warning("run %s: its lock %s was taken over by another run", run, lock.url)
                    return
            except Exception as error:  # a storage hiccup; the next beat tries again
                log.warning("run %s: renewing its lock failed: %s", run, error)

    thread = threading.Thread(target=beat, name=f"run-lock-{run}", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        stop.set()
        thread.join(timeout=max(5.0, heartbeat_s))
        release_run_lock(lock)


def _refuse_if_live(run: str, target: DataLocation, held: dict, expiry_s: float) -> None:
    now = time.time()
    renewed = held.get("renewed_at", held.get("acquired_at", 0.0))
    if not isinstance(renewed, (int, float)):
        renewed = 0.0
    if now - renewed < expiry_s and not _holder_is_gone(held):
        acquired = held.get("acquired_at", renewed)
        acquired = acquired if isinstance(acquired, (int, float)) else renewed
        raise RunLockedError(
            f"run {run!r} is already being produced (lock {target.url}, held by {held.get('host', '?')} "
            f"pid {held.get('pid', '?')} since {_utc(acquired)}, last heartbeat {now - renewed:.0f} s ago); "
            f"wait for it to finish (a lock not renewed for {expiry_s:.0f} s is taken over)")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _read(target: DataLocation) -> dict | None:
    """The lease's record; None when there is no lock. A file that is not a record (being written
    right now, or damaged) counts as renewed when it was last modified."""
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
        written = written or time.time()
        return {"acquired_at": written, "renewed_at": written, "unreadable": text}
    return record


def _holder_is_gone(held: dict) -> bool:
    """True when the lease was taken on this host by a process that no longer exists."""
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
