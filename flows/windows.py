"""Rows through their stages a window at a time: at most `window` rows are in flight, a row's
next chain of stages (its consecutive stages with the same resources, one task run) is submitted
only when the stages it needs have completed, and a new row enters when one settles. So a failed
stage ends its row without submitting the rest, and the flow process holds task futures for the
window only, however long the manifest.

Ctrl-C and SIGTERM only ask the loop to stop; it stops between two steps with RunInterrupted, so a
signal never lands inside a task submission, and the flow can report what settled. Stages that had
finished when the stop came still count, so a row they ended is reported settled, not
interrupted."""

from __future__ import annotations

import queue
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from prefect.futures import PrefectFuture

from flows.outcomes import row_outcome
from infra.profiles import gpu_slot
from tasks.common.rows import AvatarRow
from tasks.common.stage_chain import ChainStep, StageResult, chain_label, run_stage_chain


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOW_PRIORITY = -10
"""Dask priority of work off the critical path (exports): among ready tasks a worker runs the one
of highest priority first, and every other stage keeps the default 0. This orders all of a run's
ready tasks only where the scheduler sends every ready task to a worker at once
(distributed.scheduler.worker-saturation: inf); its default queue of root-like tasks would hand
an ingest out only after the exports a worker already holds."""
IN_FLIGHT_PER_SLOT = 2
"""Normal chains submitted per worker thread, when the flow knows the threads: one running and
one queued on the worker, so a worker never waits for the flow to submit its next chain."""
STOP_SETTLE_SECONDS = 3.0
"""On a stop, how long in all the loop waits for the states of stages that had finished. A Ctrl-C
reaches the whole process group, so a worker may die holding a state, and then it never comes: such
a stage counts as not settled."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run between two steps; `signal` is the signal's number."""

    def __init__(self, number: int):
        super().__init__(f"interrupted by {signal.Signals(number).name}")
        self.signal = number


@dataclass(frozen=True)
class Stage:
    name: str
    task: Any
    args: tuple
    gpu: bool
    needs: tuple[str, ...]
    priority: int = 0


@dataclass
class AvatarStages:
    """One row's stages in pipeline order; `add` reads like a task submission and returns a
    placeholder for the stage's result, which later stages take as an argument."""

    row: AvatarRow
    stages: list[Stage] = field(default_factory=list)

    def add(self, name: str, task: Any, *args: Any, gpu: bool = False, priority: int = 0) -> StageResult:
        needs = tuple(arg.stage for arg in args if isinstance(arg, StageResult))
        self.stages.append(Stage(name, task, args, gpu, needs, priority))
        return StageResult(name)


def _priority(priority: int):
    """Dask priority annotation of a submission (DaskTaskRunner passes annotations on to the scheduler)."""
    import dask

    return dask.annotate(priority=priority)


class _StageView:
    """One stage's view of the chain that ran it: the chain's state, and this stage's own result."""

    def __init__(self, future: PrefectFuture, stage: str):
        self.future, self.stage = future, stage

    @property
    def state(self):
        return self.future.state

    def result(self, *args, **kwargs):
        value = self.future.result(*args, **kwargs)
        return value[self.stage] if isinstance(value, dict) else value


def chain_stages(stages: list[Stage]) -> list[list[Stage]]:
    """Consecutive stages with the same GPU need and priority, in pipeline order: each group runs as one task."""
    chains: list[list[Stage]] = []
    for stage in stages:
        if chains and (chains[-1][-1].gpu, chains[-1][-1].priority) == (stage.gpu, stage.priority):
            chains[-1].append(stage)
        else:
            chains.append([stage])
    return chains


class _RowRun:
    """A row in flight: its submitted futures and which of them have settled."""

    def __init__(self, stages: AvatarStages):
        self.stages = stages
        self.chains = chain_stages(stages.stages)
        # A chain's future is kept under its last stage's name.
        self.chain_of = {stage.name: chain[-1].name for chain in self.chains for stage in chain}
        self.futures: dict[str, PrefectFuture] = {}
        self.settled: set[str] = set()
        self.completed: set[str] = set()

    def submit_ready(self, on_done: Callable[[str], None], normal_room: int | None = None,
                     low_priority: bool = True) -> int:
        """Submit the chains whose stages' inputs have completed: at most `normal_room` of normal
        priority (None: any number), and low-priority ones only when `low_priority`. The others
        are held for a later call. Returns how many normal chains it submitted."""
        if len(self.completed) < len(self.settled):
            return 0  # a stage failed: nothing after it is submitted
        submitted = 0
        for chain in self.chains:
            key = chain[-1].name
            inside = {stage.name for stage in chain}
            needs = {self.chain_of[need] for stage in chain for need in stage.needs if need not in inside}
            if key in self.futures or not all(need in self.completed for need in needs):
                continue
            normal = chain[0].priority >= 0
            if (normal and normal_room is not None and submitted >= normal_room) or (not normal and not low_priority):
                continue
            steps = [ChainStep(stage.name, stage.task, stage.args) for stage in chain]
            with gpu_slot(chain[0].gpu), _priority(chain[0].priority):
                future = run_stage_chain.submit(steps, [self.futures[need] for need in sorted(needs)],
                                                chain_label(self.stages.row.id, steps))
            self.futures[key] = future
            future.add_done_callback(lambda _, name=key: on_done(name))
            submitted += normal
        return submitted

    def settle(self, name: str) -> None:
        self.futures[name].wait()
        self._mark_settled(name)

    def settle_if_held(self, name: str, timeout: float) -> None:
        """Settle a stage whose run is over if its final state comes within `timeout` seconds."""
        future = self.futures[name]
        wrapped = getattr(future, "wrapped_future", None)
        if wrapped is None or not wrapped.done():
            return
        try:
            future.result(timeout=max(timeout, 0.01), raise_on_failure=False)  # keeps the state for the outcome
        except Exception:  # the worker holding it is gone: its state would only come from a rerun
            return
        self._mark_settled(name)

    def _mark_settled(self, name: str) -> None:
        self.settled.add(name)
        if self.futures[name].state.is_completed():
            self.completed.add(name)

    @property
    def finished(self) -> bool:
        return len(self.settled) == len(self.futures)

    @property
    def ended(self) -> bool:
        """Nothing more will run: every stage settled, or a stage failed and stopped the rest."""
        failed = len(self.completed) < len(self.settled)
        return self.finished and (failed or len(self.futures) == len(self.chains))

    def outcome(self) -> dict:
        chain = {s.name: _StageView(self.futures[self.chain_of[s.name]], s.name) for s in self.stages.stages
                 if self.chain_of[s.name] in self.futures}
        return row_outcome(self.stages.row, chain)

    def unsettled_normal_chains(self) -> int:
        """Chains of normal priority submitted and not yet settled."""
        return sum(1 for chain in self.chains if chain[0].priority >= 0
                   and chain[-1].name in self.futures and chain[-1].name not in self.settled)

    def running(self) -> list[str]:
        """The stages of the chains still running (one of each chain's stages is running)."""
        return [stage.name for chain in self.chains for stage in chain
                if chain[-1].name in self.futures and chain[-1].name not in self.settled]


class RowWindows:
    """Runs rows' stages with at most `window` rows in flight; `record` sees each row's outcome
    as it settles (progress, failure events). After an interrupt, `outcomes` holds the rows that
    settled and `unfinished` the others.

    With `slots` (a callable giving the cluster's worker threads), the flow submits at most
    IN_FLIGHT_PER_SLOT normal chains per thread, earlier rows first, and holds low-priority chains
    (exports) while every thread has a normal chain. The scheduler hands each submitted task to a
    worker at once; chains submitted all together are shared out by count, not by length, and a
    worker whose share ran out filled up with exports, so it never counted as idle and the chains
    queued on the other worker were not stolen (measured: one worker idle for 5.7 s at the end of a
    65 s run). Submitting them all together also cost the first stage a second of the flow
    process's time while the workers started."""

    def __init__(self, window: int, record: Callable[[dict], dict], slots: Callable[[], int] | None = None):
        self.window = window
        self.record = record
        self.slots = slots
        self.outcomes: list[dict] = []
        self._active: dict[int, _RowRun] = {}
        self._entered = 0
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._stop: int | None = None

    def run(self, rows: Iterable[AvatarStages], started: Callable[[], object] | None = None) -> list[dict]:
        """Run every row; `started` is called once the first rows' stages are submitted."""
        with self._stop_requests():
            return self._run(iter(rows), started)

    def _run(self, waiting, started: Callable[[], object] | None = None) -> list[dict]:
        self._fill(waiting)
        if started is not None:
            started()
        while self._active:
            self._check_stop()
            try:  # the timeout lets a stop request through while nothing settles
                key, name = self._done.get(timeout=0.5)
            except queue.Empty:
                continue
            self._check_stop()
            row = self._active[key]
            row.settle(name)
            self._submit_ready()
            if row.ended:
                del self._active[key]
                self.outcomes.append(self.record(row.outcome()))
                self._fill(waiting)
        return self.outcomes

    def _submit_ready(self) -> None:
        """Submit what is ready, earlier rows first, within the room `slots` leaves."""
        room, low_priority = None, True
        if self.slots is not None:
            slots = max(1, self.slots())
            unsettled = sum(row.unsettled_normal_chains() for row in self._active.values())
            room, low_priority = max(0, IN_FLIGHT_PER_SLOT * slots - unsettled), unsettled < slots
        for key, row in self._active.items():
            submitted = row.submit_ready(lambda stage, key=key: self._done.put((key, stage)), room, low_priority)
            if room is not None:
                room -= submitted

    def _check_stop(self) -> None:
        if self._stop is not None:
            self._settle_finished_stages()
            raise RunInterrupted(self._stop)

    def _settle_finished_stages(self) -> None:
        """On a stop: stages that had finished count even when the loop has not read their done
        events yet, and a row they end is recorded."""
        deadline = time.monotonic() + STOP_SETTLE_SECONDS
        for key, row in list(self._active.items()):
            for name in list(row.futures):
                if name not in row.settled:
                    row.settle_if_held(name, deadline - time.monotonic())
            if row.ended:
                del self._active[key]
                self.outcomes.append(self.record(row.outcome()))

    @contextmanager
    def _stop_requests(self):
        """Turn Ctrl-C and SIGTERM into a stop request while the loop runs (only the main thread
        may handle signals), then put the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

        def request_stop(number, frame) -> None:
            self._stop = number

        for number in STOP_SIGNALS:
            signal.signal(number, request_stop)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def _fill(self, waiting) -> None:
        while len(self._active) < self.window:
            self._check_stop()
            stages = next(waiting, None)
            if stages is None:
                break
            key = self._entered = self._entered + 1
            self._active[key] = _RowRun(stages)
        self._submit_ready()  # once for the rows that entered: each call looks at every row in flight

    def unfinished(self, rows: Iterable[AvatarRow]) -> list[dict]:
        """Rows of `rows` that did not settle: those in flight, with the stages that were running,
        and those not started."""
        running = {run.stages.row.id: run.running() for run in self._active.values()}
        started = {run.stages.row.id for run in self._active.values() if run.futures}
        settled = {outcome["id"] for outcome in self.outcomes}

        def state(row: AvatarRow) -> str:
            if running.get(row.id):
                return f"running {', '.join(running[row.id])}"
            return "waiting for a worker" if row.id in started else "not started"  # a held export

        return [{"id": row.id, "line": row.line, "state": state(row)} for row in rows if row.id not in settled]
