"""A row's consecutive stages in one Prefect task run. Each task run in a Dask worker costs about 0.45 s of
Prefect bookkeeping (its context and settings are rebuilt), which is 16% of a batch's wall time when every
stage is a task. The stages still run through their own task functions (`Task.fn`, so `run_stage` times and
records each one), and each keeps its own retries: a raised error is retried as its task's settings say,
bad input never is."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from stores.avatar_store import StageRef
from tasks.common.retries import worth_retrying


@dataclass(frozen=True)
class StageResult:
    """Stands for an earlier stage's result among a later stage's arguments."""

    stage: str


@dataclass(frozen=True)
class ChainStep:
    """One stage of a chain: its name, its Prefect task, and its arguments (StageResult for earlier results)."""

    name: str
    task: Any
    args: tuple


def first_line(error: BaseException) -> str:
    """An error's message, first line only: one line per failed row."""
    return (str(error).strip().splitlines() or [""])[0]


def _run_step(step: ChainStep, args: tuple) -> StageRef | State:
    """Run one stage with its task's retries; a raised error that outlives them becomes a Failed state
    whose message starts with the stage's name, as a failed stage task's would."""
    logger = get_run_logger()
    retries = int(step.task.retries or 0)
    delay = step.task.retry_delay_seconds
    for attempt in range(retries + 1):
        try:
            return step.task.fn(*args)
        except Exception as error:  # run_stage returns bad input as a Failed state; raised, it is not retried either
            detail = f"{step.name}: {type(error).__name__}: {first_line(error)}"
            if not worth_retrying(error):  # bad input: its own one line, as run_stage gives it
                return Failed(message=f"{step.name}: {first_line(error)}")
            if attempt == retries:
                if retries:
                    logger.error(f"{detail} - Retries are exhausted")
                return Failed(message=detail)
            wait = delay[attempt] if isinstance(delay, list) else (delay or 0)
            logger.warning(f"{detail} - Retry {attempt + 1}/{retries} will start {wait} second(s) from now")
            time.sleep(float(wait))
    raise AssertionError("unreachable")


def chain_label(row_id: str, steps: list[ChainStep]) -> str:
    """The task run's name in the UI: the row and its stages, e.g. "row7: ingest, reconstruct, animate"."""
    return f"{row_id}: {', '.join(step.name for step in steps)}"


@task(name="avatar-stages", task_run_name="{label}", cache_policy=NO_CACHE, persist_result=False)
def run_stage_chain(steps: list[ChainStep], earlier: list[dict[str, StageRef]],
                    label: str) -> dict[str, StageRef] | State:
    """Run `steps` in order on this worker. `earlier`: the results of the chains they take results from.
    `label` names the task run (chain_label). Returns every step's StageRef by name, or the Failed state
    of the first step that failed."""
    results = {name: ref for chain in earlier for name, ref in chain.items()}
    done: dict[str, StageRef] = {}
    for step in steps:
        args = tuple(results[arg.stage] if isinstance(arg, StageResult) else arg for arg in step.args)
        outcome = _run_step(step, args)
        if isinstance(outcome, State):
            return outcome
        results[step.name] = done[step.name] = outcome
    return done
