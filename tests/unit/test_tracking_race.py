"""Two processes opening the MLflow tracking store of a fresh data dir at the same moment both
succeed: the first one creates sqlite's schema, the other waits for it."""

from __future__ import annotations

import subprocess
import sys
from tests.conftest import REPO

OPEN_STORE = """
import sys, time
from pathlib import Path
import mlflow
from stores.model_registry import production_versions
from stores.tracking import RunTracker

data_dir, start = sys.argv[1], Path(sys.argv[2])
print("ready", flush=True)
while not start.exists():  # both processes have imported MLflow; now start together
    time.sleep(0.005)
production_versions(data_dir, {"gan"})
with RunTracker(data_dir, "race", sys.argv[3]) as tracker:
    tracker.log_metrics({"x": 1.0})
print("ok")
"""


def test_two_first_runs_on_a_fresh_data_dir_both_open_the_tracking_store(tmp_path):
    for attempt in range(2):
        data_dir, start = tmp_path / f"data-{attempt}", tmp_path / f"start-{attempt}"
        data_dir.mkdir()
        processes = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(data_dir), str(start), f"run-{n}"],
                                      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for n in range(2)]
        for process in processes:  # both have imported MLflow
            assert process.stdout.readline().strip() == "ready"
        start.touch()
        for process in processes:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0 and out.strip() == "ok", err[-3000:]

        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{data_dir / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
        assert sorted(run.info.run_name for run in runs) == ["run-0", "run-1"]
