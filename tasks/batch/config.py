"""Settings of a produce run's bookkeeping: how many rows are in flight, and how much of a big run
its reports and Prefect artifacts show row by row. None of them changes an avatar, so they are not
part of a row's fingerprint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.common.environment import number_from_environment

WINDOW_VARIABLE = "AVATARFLOW_ROWS_IN_FLIGHT"
"""Environment variable: rows in flight at once (BatchConfig.window)."""


class BatchConfig(BaseModel):
    """How a run feeds its rows to the workers and reports them."""

    model_config = ConfigDict(frozen=True)

    window: int = Field(64, ge=1, le=100_000)
    """Rows in flight at once. A row's next stage is submitted when the stages it needs have
    finished, and a new row enters when one settles, so the flow process holds task futures for
    this many rows only, however long the manifest."""
    max_failure_events: int = Field(1000, ge=0)
    """Failure events emitted per run, one per failed row; a bigger run's further failures are in
    its quarantine report only (a deployment's failure automation needs a handful)."""
    max_table_rows: int = Field(1000, ge=1)
    """Rows of the avatars and quarantine tables in Prefect artifacts and in report.html; a bigger
    run says how many are left out, and quarantine.csv and summary.json keep every row."""

    @classmethod
    def from_environment(cls, window: int | None = None) -> "BatchConfig":
        """The defaults, with the window from the argument, else from AVATARFLOW_ROWS_IN_FLIGHT."""
        if window is None:
            window = number_from_environment(WINDOW_VARIABLE, int, None, "a whole number of rows")
        return cls() if window is None else cls(window=window)
