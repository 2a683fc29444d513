"""Blender processes for render jobs: one long-lived process per worker process, fed job files
over a pipe, or one fresh process per job. No bpy here.

bpy is bound to the process (and thread) that imports it, so Blender never runs in a worker's
thread. Each worker process keeps one child running `blender_job.py --serve` and hands it job
files one at a time (a lock: never two at once). The child is replaced after `jobs_per_blender`
jobs, and at once after any failed job (an error, a crash, a timeout), so the next job always
starts from a clean process. A crash costs only the job it was running: that job raises
RenderError (the render task retries it) and the next one gets a fresh process.

Every Blender process leads its own process group, so a timeout kills it with anything it
started, and gets SIGKILL from Linux when the process that started it dies.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

BLENDER_JOB_SCRIPT = Path(__file__).resolve().with_name("blender_job.py")
LOG_FILE = "blender.log"
RESULT_FILE = "result.json"
LOG_TAIL_LINES = 30

LOG = logging.getLogger(__name__)


class RenderError(RuntimeError):
    """A Blender job or an ffmpeg step failed; the message carries the end of its log."""


def log_tail(log_path: Path, n_lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file (empty when it does not exist)."""
    if not log_path.is_file():
        return ""
    with open(log_path, encoding="utf-8", errors="replace") as log:
        return "".join(deque(log, maxlen=n_lines))


def _job_files(job_path: Path) -> tuple[Path, Path]:
    """The job's log and result paths (out_dir created, a stale result removed)."""
    job = json.loads(job_path.read_text(encoding="utf-8"))
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / RESULT_FILE
    result_path.unlink(missing_ok=True)
    return out_dir / LOG_FILE, result_path


def _child_env() -> dict[str, str]:
    """The worker's environment (thread counts included), without the user's site-packages."""
    env = dict(os.environ)
    env["PYTHONNOUSERSITE"] = "1"
    return env


_SETPRIV = shutil.which("setpriv")


def _dying_with_parent(command: list[str]) -> list[str]:
    """The command wrapped so the child gets SIGKILL when its parent dies: util-linux's setpriv
    arms that before it execs the command, so no Python runs in the forked child (Python code
    between fork and exec in a threaded worker can print a stray traceback)."""
    if _SETPRIV is None:
        raise RenderError("setpriv was not found; it comes with util-linux (infra/setup.sh installs it)")
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *command]


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process's group unless the leader was reaped already (its pid held by the
    zombie cannot be reused until then), and reap it."""
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def _how_it_ended(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


def _timeout_error(job_path: Path, timeout_s: float, log_path: Path) -> RenderError:
    return RenderError(f"Blender job {job_path} ran past its {timeout_s:g} s timeout and was killed; "
                       f"log {log_path} ends:\n{log_tail(log_path)}")


# ---------------------------------------------------------------------------------------------
# one fresh process per job


def run_one_shot(job_path: Path | str, timeout_s: float, script: Path = BLENDER_JOB_SCRIPT) -> dict:
    """Run `script --job` (blender_job.py, or another bpy script with its file contract) in a fresh
    process; its stdout and stderr go to out_dir/blender.log. Returns result.json's content; raises
    RenderError on failure or timeout."""
    job_path = Path(job_path).resolve()
    log_path, result_path = _job_files(job_path)
    command = _dying_with_parent([sys.executable, str(script), "--job", str(job_path)])
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(),
                                   cwd=log_path.parent, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise _timeout_error(job_path, timeout_s, log_path) from None
        finally:
            _kill_group(process)
    if returncode != 0 or not result_path.is_file():
        raise RenderError(f"Blender job {job_path} failed ({_how_it_ended(returncode)}); "
                          f"log {log_path} ends:\n{log_tail(log_path)}")
    return json.loads(result_path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# one long-lived process, many jobs


class _Spawner:
    """Starts processes from one daemon thread that lives as long as this process. Linux sends
    PR_SET_PDEATHSIG when the *thread* that forked the child ends, and a long-lived Blender must
    not die with whichever worker thread happened to start it."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="blender-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            start, future = self._requests.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(start())
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)

    def call(self, start):
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._requests.put((start, future))
        return future.result()


_SPAWNER: tuple[int, _Spawner] | None = None
_SPAWNER_LOCK = threading.Lock()


def _process_spawner() -> _Spawner:
    """This process's spawner thread (a forked child starts its own: threads do not survive fork)."""
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None or _SPAWNER[0] != os.getpid():
            _SPAWNER = (os.getpid(), _Spawner())
        return _SPAWNER[1]


class _Died(Exception):
    """The Blender process closed its end of the protocol pipe: it exited or was killed."""


class _TimedOut(Exception):
    """No message came before the deadline."""


class BlenderProcess:
    """One `blender_job.py --serve` process and its two protocol pipes (JSON lines on fds of
    their own, so nothing Blender prints can corrupt them). Its start-up output goes to
    `startup_log`, the log of the job that needed it; each job's output goes to that job's log."""

    def __init__(self, startup_log: Path, spawner: _Spawner) -> None:
        job_read, job_write = os.pipe()  # parent writes jobs
        answer_read, answer_write = os.pipe()  # child writes answers
        command = _dying_with_parent([sys.executable, str(BLENDER_JOB_SCRIPT), "--serve", "--fd-in", str(job_read),
                                      "--fd-out", str(answer_write)])

        def start() -> subprocess.Popen:
            with open(startup_log, "ab") as log:
                return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        pass_fds=(job_read, answer_write), env=_child_env(),
                                        cwd=tempfile.gettempdir(), start_new_session=True)
        try:
            self._popen = spawner.call(start)
        except BaseException:
            for fd in (job_read, job_write, answer_read, answer_write):
                os.close(fd)
            raise
        os.close(job_read)  # the child's ends: only the child holds them, so its death reads as EOF
        os.close(answer_write)
        self._jobs = job_write
        self._answers = answer_read
        self._buffer = bytearray()
        self.pid = self._popen.pid
        self.jobs_done = 0
        self.ready: dict | None = None
        """The last ready message: {"ready", "pid", "left": {ID collection: count}}."""
        self._awaiting_ready = True
        self._closed = False
        self._close_lock = threading.Lock()

    def _read_message(self, deadline: float) -> dict:
        while b"\n" not in self._buffer:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise _TimedOut()
            readable, _, _ = select.select([self._answers], [], [], wait)
            if readable:
                chunk = os.read(self._answers, 65536)
                if not chunk:
                    raise _Died()
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return json.loads(line)

    def wait_ready(self, deadline: float) -> dict:
        """Wait until the process has emptied its scene (after start-up or its last job)."""
        if self._awaiting_ready:
            message = self._read_message(deadline)
            if message.get("ready") is not True:
                raise RuntimeError(f"Blender process {self.pid} said {message!r} where it should say it is ready")
            self.ready = message
            self._awaiting_ready = False
        return self.ready

    def run(self, job_path: Path, deadline: float) -> dict:
        """Send one job and wait for its answer ({"ok", "result"} or {"ok", "error"})."""
        self.wait_ready(deadline)
        data = (json.dumps({"job": str(job_path)}) + "\n").encode("utf-8")
        try:
            while data:
                data = data[os.write(self._jobs, data):]
        except BrokenPipeError:
            raise _Died() from None
        self._awaiting_ready = True
        answer = self._read_message(deadline)
        self.jobs_done += 1
        return answer

    def returncode(self, wait_s: float = 1.0) -> int | None:
        """The exit status once the process has ended (None if it still runs after wait_s)."""
        try:
            return self._popen.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the process group without reaping or closing anything."""
        if self._popen.returncode is None:
            try:
                os.killpg(self._popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        """Kill the process group and reap it; close the pipes (once: a closed fd number may be reused)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            _kill_group(self._popen)
            os.close(self._jobs)
            os.close(self._answers)


class BlenderWorker:
    """The Blender process of one worker process: jobs run one at a time on one long-lived
    process, replaced after `jobs_per_blender` jobs or after any failed job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spawner = _process_spawner()
        self._process: BlenderProcess | None = None
        self.owner_pid = os.getpid()

    @property
    def pid(self) -> int | None:
        """The current Blender process's pid (None until a job starts one, and after a failure)."""
        process = self._process
        return process.pid if process is not None else None

    @property
    def ready(self) -> dict | None:
        """The current process's last ready message (what was left in its scene after emptying it)."""
        process = self._process
        return process.ready if process is not None else None

    def run(self, job_path: Path | str, timeout_s: float, jobs_per_blender: int = 50) -> dict:
        """Run one job file; returns result.json's content, raises RenderError with the log's end.
        The timeout covers waiting for the process to be ready (its start-up, or the emptying of
        its scene after the last job) and the job itself."""
        if jobs_per_blender < 1:
            raise ValueError(f"jobs_per_blender must be >= 1, got {jobs_per_blender}")
        job_path = Path(job_path).resolve()
        with self._lock:
            deadline = time.monotonic() + timeout_s
            log_path, _ = _job_files(job_path)
            process = self._ready_process(job_path, timeout_s, log_path, deadline)
            with self._failing_process(process, job_path, timeout_s, log_path, "died mid-job"):
                answer = process.run(job_path, deadline)
            if not answer.get("ok"):
                self._discard()
                raise RenderError(f"Blender job {job_path} failed: {answer.get('error')}; "
                                  f"log {log_path} ends:\n{log_tail(log_path)}")
            if process.jobs_done >= jobs_per_blender:
                self._discard()
            return answer["result"]

    def _ready_process(self, job_path: Path, timeout_s: float, log_path: Path, deadline: float) -> BlenderProcess:
        """The live process, ready for a job: the current one, or a fresh one."""
        if (process := self._process) is not None:
            with self._failing_process(process, job_path, timeout_s, log_path, "ended while emptying its scene"):
                try:
                    process.wait_ready(deadline)
                    return process
                except _Died:  # died while idle: costs no job
                    LOG.warning("Blender process %d ended between jobs (%s); starting a fresh one",
                                process.pid, _how_it_ended(process.returncode()))
                    self._discard()
        process = self._process = BlenderProcess(log_path, self._spawner)
        with self._failing_process(process, job_path, timeout_s, log_path, "ended while starting"):
            process.wait_ready(deadline)
        return process

    @contextlib.contextmanager
    def _failing_process(self, process: BlenderProcess, job_path: Path, timeout_s: float, log_path: Path,
                         died: str):
        """Any failure inside discards `process` (a half-done exchange leaves it unusable); a
        timeout or its death becomes a RenderError naming the job and the end of its log."""
        try:
            yield
        except _TimedOut:
            self._discard()
            raise _timeout_error(job_path, timeout_s, log_path) from None
        except _Died:
            how = _how_it_ended(process.returncode())
            self._discard()
            raise RenderError(f"Blender job {job_path} failed: its Blender process {process.pid} {died} "
                              f"({how}); log {log_path} ends:\n{log_tail(log_path)}") from None
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.close()

    def close(self) -> None:
        """Kill the Blender process now; a job in progress fails with RenderError (its thread
        then closes the pipes)."""
        if self._lock.acquire(blocking=False):
            try:
                self._discard()
            finally:
                self._lock.release()
        elif (process := self._process) is not None:
            process.kill()


_SHARED: BlenderWorker | None = None
_SHARED_LOCK = threading.Lock()


def shared_worker() -> BlenderWorker:
    """This process's BlenderWorker, created on first use and closed at exit. A forked child
    gets its own (the parent's Blender is not its child)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED.owner_pid != os.getpid():
            _SHARED = BlenderWorker()
            atexit.register(_close_shared, _SHARED)
        return _SHARED


def _close_shared(worker: BlenderWorker) -> None:
    if worker.owner_pid == os.getpid():
        worker.close()
