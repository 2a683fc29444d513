"""MLflow tracking: one run per flow run. A local data dir keeps its sqlite database and the
artifacts inside it; a data dir URL keeps the artifacts under `<url>/mlartifacts` and takes the
database from AVATARFLOW_MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_URI), since sqlite cannot live
on an object store."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from stores.location import DataLocation

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TRACKING_URI_VARIABLES = ("AVATARFLOW_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
"""Where the tracking database of a data dir URL is named, first one set wins: any database URL
MLflow takes (postgresql://…, mysql://…, sqlite:////absolute/path.db)."""


def tracking_uri(data_dir: str | os.PathLike) -> str:
    """The MLflow database: sqlite inside a local data dir (MLflow needs an absolute path), or
    the URI from the environment for a data dir URL; ValueError naming the variable if unset."""
    location = DataLocation(data_dir)
    if location.is_local:
        return f"sqlite:///{location.local_path / 'mlflow.db'}"
    for variable in TRACKING_URI_VARIABLES:
        if os.environ.get(variable, "").strip():
            return os.environ[variable].strip()
    raise ValueError(f"the data dir {location.url} is a URL, so MLflow's database cannot live in it: set "
                     f"{TRACKING_URI_VARIABLES[0]} to a database URL (e.g. postgresql://host/db or "
                     "sqlite:////absolute/path/mlflow.db)")


_SCHEMA_READY: set[str] = set()
_SCHEMA_GUARD = threading.Lock()


def ready_tracking_uri(data_dir: str | os.PathLike) -> str:
    """tracking_uri(data_dir), with its database's schema created first. For a sqlite file that
    happens under an inter-process lock beside it: two runs starting on a fresh data dir would
    otherwise both run MLflow's migrations and one of them would fail."""
    uri = tracking_uri(data_dir)
    database = _sqlite_file(uri)
    if database is None:
        return uri
    with _SCHEMA_GUARD:
        if uri in _SCHEMA_READY:
            return uri
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(database.name + ".lock"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            SqlAlchemyStore(uri, artifact_root(data_dir)).engine.dispose()  # creates a fresh database's tables
        _SCHEMA_READY.add(uri)
    return uri


def prepare_tracking(data_dir: str | os.PathLike) -> threading.Thread:
    """Import MLflow and create the database's schema on a thread, so a run that logs to MLflow at its
    end does not wait for either then (seconds on a fresh data dir). Not a daemon: a process that ends
    early (a run that fails at once) waits for it, since MLflow's migrations cut off half way leave a
    sqlite database that no later run can open."""
    def prepare() -> None:
        try:
            ready_tracking_uri(data_dir)
            import mlflow  # noqa: F401
        except Exception:  # the run's own use of MLflow reports any problem, with its context
            pass

    thread = threading.Thread(target=prepare, name="mlflow-prepare", daemon=False)
    _PREPARING.append(thread)
    thread.start()
    return thread


def _wait_for_preparation() -> None:
    """Join a preparing thread before this thread imports MLflow itself: two threads importing one
    package at once can deadlock on its module locks."""
    while _PREPARING:
        _PREPARING.pop().join()


_PREPARING: list[threading.Thread] = []


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI; None for other databases and in-memory sqlite."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _experiment_id(client, name: str, artifact_location: str) -> str:
    """The experiment's id, creating it if needed; a run creating it at the same moment wins."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def artifact_root(data_dir: str | os.PathLike) -> str:
    location = DataLocation(data_dir).join("mlartifacts")
    return location.local_path.as_uri() if location.is_local else location.url


class RunTracker:
    """Open one MLflow run and log params, metrics and files to it."""

    def __init__(self, data_dir: str | os.PathLike, experiment: str, run_name: str, tags: dict[str, str] | None = None):
        _wait_for_preparation()
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(ready_tracking_uri(data_dir))
        experiment_id = _experiment_id(mlflow.MlflowClient(), experiment, artifact_root(data_dir))
        self.run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {})
        self.run_id = self.run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow params are strings of at most 6000 characters.
        self._mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | os.PathLike | DataLocation, artifact_path: str | None = None) -> None:
        """Log a file, local or at a URL (fetched into a temporary folder first)."""
        with DataLocation(path).local_copy() as local:
            self._mlflow.log_artifact(str(local), artifact_path=artifact_path)

    def log_dict(self, data: dict[str, Any], file_name: str) -> None:
        self._mlflow.log_dict(data, file_name)

    def close(self, status: str = "FINISHED") -> None:
        self._mlflow.end_run(status=status)

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("FAILED" if exc_type else "FINISHED")
