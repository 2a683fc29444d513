"""MLflow tracking: one run per flow run, on a sqlite backend under the data dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def tracking_uri(data_dir: str | Path) -> str:
    """sqlite URI of the data dir's MLflow database (MLflow needs an absolute path)."""
    return f"sqlite:///{Path(data_dir).resolve() / 'mlflow.db'}"


def artifact_root(data_dir: str | Path) -> str:
    return (Path(data_dir).resolve() / "mlartifacts").as_uri()


class RunTracker:
    """Open one MLflow run and log params, metrics and files to it."""

    def __init__(self, data_dir: str | Path, experiment: str, run_name: str, tags: dict[str, str] | None = None):
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri(data_dir))
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(experiment, artifact_location=artifact_root(data_dir))
        )
        self.run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {})
        self.run_id = self.run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow params are strings of at most 6000 characters.
        self._mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, data: dict[str, Any], file_name: str) -> None:
        self._mlflow.log_dict(data, file_name)

    def close(self, status: str = "FINISHED") -> None:
        self._mlflow.end_run(status=status)

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("FAILED" if exc_type else "FINISHED")
