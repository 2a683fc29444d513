"""Run monitoring against a real local Prefect server: a flow publishes the progress and table
artifacts and one failure event per failed avatar; the failure automation is stored with the right
trigger and action, applying it again updates it in place, and failure events of one flow run
beyond the threshold pause the deployment (its schedule stops)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow

from infra.automations import FailureAutomationConfig, apply_failure_automations, automation_name
from infra.prefect_server import ensure_server, stop_server
from tasks.batch.monitoring import FAILURE_EVENT, RunProgress, artifact_key, emit_failure_events, publish_run_tables
from tasks.batch.plan import RunPlan
from tasks.common.rows import AvatarRow
from tests.conftest import free_port

PAUSE_TIMEOUT_S = 90.0


@flow(name="nightly-batch-stand-in")
def nightly_batch_stand_in() -> None:
    """A scheduled deployment needs a flow; this one never runs."""


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    url = ensure_server(home, port=free_port())
    EventsWorker.drain_all()  # an events worker from earlier in this process would still hold its old server
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
            EventsWorker.drain_all()
    finally:
        stop_server(home)


def wait_until_paused(client, deployment_id, timeout_s: float) -> float | None:
    """Seconds until the deployment reads as paused, or None if it did not within the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if client.read_deployment(deployment_id).paused:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def stored_failure_events(client, expected: int, related_to: str, timeout_s: float = 30.0) -> list[dict]:
    """The failure events related to a resource that the server has stored; it writes them in
    batches, so wait for `expected`."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.request("POST", "/events/filter", json={"filter": {
            "event": {"name": [FAILURE_EVENT]}, "related": {"id": [related_to]}}})
        events = response.json()["events"]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_failures_of_one_flow_run_pause_its_deployment(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    deployment_id = nightly_batch_stand_in.to_deployment(name="nightly", interval=3600).apply()
    config = FailureAutomationConfig(threshold=3, within_seconds=600)
    full_name = "nightly-batch-stand-in/nightly"

    with get_client(sync_client=True) as client:
        # A looser setting first, then the real one: the second apply must update, not add.
        first = apply_failure_automations([full_name], FailureAutomationConfig(threshold=7, within_seconds=60),
                                          api_url=prefect_api)
        applied = apply_failure_automations([deployment_id], config, api_url=prefect_api)
        assert applied == first and list(applied) == [full_name]
        stored_all = client.read_automations_by_name(automation_name(full_name))
        assert [a.id for a in stored_all] == [applied[full_name]]
        stored = stored_all[0]
        assert stored.enabled
        trigger = stored.trigger
        assert trigger.expect == {FAILURE_EVENT} and trigger.posture == "Reactive"
        assert trigger.threshold == 3 and trigger.within.total_seconds() == 600
        assert trigger.for_each == {"related:flow-run:prefect.resource.id"}
        assert trigger.match_related.model_dump() == {"prefect.resource.role": "deployment",
                                                      "prefect.resource.id": f"prefect.deployment.{deployment_id}"}
        [action] = stored.actions
        assert action.type == "pause-deployment" and action.deployment_id == deployment_id
        owned = client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
        assert [a.id for a in owned] == [stored.id]

        deployment = client.read_deployment(deployment_id)
        assert not deployment.paused and deployment.schedules and deployment.schedules[0].active
        run_a = client.create_flow_run_from_deployment(deployment_id)
        run_b = client.create_flow_run_from_deployment(deployment_id)
        failures = [{"id": f"row{i}", "line": i + 2, "stage": "ingest", "error": f"row{i}.jpg: empty file"}
                    for i in range(config.threshold + 1)]

        # Below the threshold in each of two flow runs: counted per flow run, so nothing happens.
        emit_failure_events("nightly-run", failures[: config.threshold - 1], str(run_a.id), str(deployment_id))
        emit_failure_events("nightly-run", failures[: config.threshold - 1], str(run_b.id), str(deployment_id))
        EventsWorker.drain_all()
        assert wait_until_paused(client, deployment_id, 8.0) is None, "paused before one flow run reached the threshold"

        # Past the threshold in run A: the deployment is paused.
        emit_failure_events("nightly-run", failures[config.threshold - 1:], str(run_a.id), str(deployment_id))
        EventsWorker.drain_all()
        seconds = wait_until_paused(client, deployment_id, PAUSE_TIMEOUT_S)
        assert seconds is not None, f"deployment not paused within {PAUSE_TIMEOUT_S:.0f} s"
        print(f"deployment paused {seconds:.1f} s after the failure events")
        # The pause is the deployment's own flag: its schedules keep their active flag, so
        # `prefect deployment schedule resume` does not undo it (the README says so).
        assert client.read_deployment(deployment_id).schedules[0].active
        events = stored_failure_events(client, 2 * (config.threshold - 1) + 2, f"prefect.deployment.{deployment_id}")
        assert len(events) == 2 * (config.threshold - 1) + 2
        payload = next(e["payload"] for e in events if e["resource"]["prefect.resource.name"] == "row0")
        assert payload["stage"] == "ingest" and payload["error"] == "row0.jpg: empty file" and payload["line"] == 2

    # The README's way back: resume the deployment through the API from the prefect CLI.
    prefect = str(Path(sys.executable).with_name("prefect"))
    resumed = subprocess.run([prefect, "api", "POST", f"/deployments/{deployment_id}/resume_deployment"],
                             env={**os.environ, "PREFECT_API_URL": prefect_api},
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with get_client(sync_client=True) as client:
        assert not client.read_deployment(deployment_id).paused


@flow(name="monitored-batch-stand-in")
def monitored_batch(run: str, outcomes: list[dict], quarantined: list[dict], reused: list[str]) -> list[float]:
    """What the produce flow does around its stages: start the progress, record each avatar's
    outcome, publish the tables. Returns the progress the server held after each outcome."""
    from prefect.client.orchestration import get_client

    plan = RunPlan(run=run, store_url="", data_dir="", manifest_dir="", manifest_sha256="", started_at=0.0,
                   pending=[AvatarRow(id=o["id"], line=o["line"], portrait="p.png", text="Hi.") for o in outcomes],
                   reused=[AvatarRow(id=avatar, line=9, portrait="p.png", text="Hi.") for avatar in reused],
                   quarantined=quarantined)
    progress = RunProgress.start(plan)
    seen = []
    with get_client(sync_client=True) as client:
        seen.append(_progress_of(client, progress.artifact_id))
        for outcome in outcomes:
            progress.record(outcome)
            seen.append(_progress_of(client, progress.artifact_id))
    finished = [o for o in outcomes if o["status"] == "complete"]
    failures = quarantined + [o for o in outcomes if o["status"] != "complete"]
    publish_run_tables(run, finished, failures, {"realtime_factor": 0.5, "output_folder": "/data/outputs/" + run})
    return seen


def _progress_of(client, artifact_id) -> float:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    return float(artifact.data)


def test_a_run_publishes_progress_tables_and_failure_events(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.events.worker import EventsWorker

    run = "Nightly_manifest-0123456789"
    outcomes = [
        {"id": "texter", "line": 2, "status": "complete", "seconds": {"ingest": 1.5, "render": 4.0},
         "video_seconds": 2.0, "warnings": [], "outputs": {}},
        {"id": "broken", "line": 3, "status": "failed", "stage": "ingest", "error": "empty.jpg: empty file"},
        {"id": "speaker", "line": 4, "status": "complete", "seconds": {"ingest": 0.5, "animate": 1.0, "render": 2.0},
         "video_seconds": 1.0, "warnings": [], "outputs": {}},
    ]
    quarantined = [{"line": 5, "id": "texter", "stage": "manifest", "error": "duplicate id 'texter'"}]
    state = monitored_batch(run, outcomes, quarantined, reused=["returning"], return_state=True)
    assert state.is_completed(), state.message
    # Five rows: the reused and the quarantined one are settled before any avatar finishes.
    assert state.result() == pytest.approx([40.0, 60.0, 80.0, 100.0])
    flow_run_id = state.state_details.flow_run_id
    EventsWorker.drain_all()

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        by_key = {a.key: a for a in artifacts}
        assert set(by_key) == {f"nightly-manifest-0123456789-{kind}" for kind in ("progress", "avatars", "quarantine")}
        assert artifact_key(run, "progress") in by_key
        progress = by_key[artifact_key(run, "progress")]
        assert progress.type == "progress" and float(progress.data) == 100.0
        assert "5 of 5 rows settled (3 finished, 2 failed)" in progress.description
        avatars = json.loads(by_key[artifact_key(run, "avatars")].data)
        assert [(r["line"], r["id"], r["status"]) for r in avatars] == [
            (2, "texter", "finished"), (3, "broken", "failed"), (4, "speaker", "finished"), (5, "texter", "failed")]
        assert avatars[0]["ingest_s"] == 1.5 and avatars[0]["animate_s"] is None and avatars[2]["total_s"] == 3.5
        assert avatars[1]["failed_stage"] == "ingest" and avatars[1]["error"] == "empty.jpg: empty file"
        assert "0.50× real time" in by_key[artifact_key(run, "avatars")].description
        quarantine = json.loads(by_key[artifact_key(run, "quarantine")].data)
        assert [(r["line"], r["stage"]) for r in quarantine] == [(5, "manifest"), (3, "ingest")]

        events = stored_failure_events(client, 2, f"prefect.flow-run.{flow_run_id}")
        assert sorted((e["payload"]["line"], e["payload"]["stage"]) for e in events) == [(3, "ingest"), (5, "manifest")]
        for event in events:
            related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
            assert related["flow-run"] == f"prefect.flow-run.{flow_run_id}" and "deployment" not in related
            assert event["resource"]["prefect.resource.id"].startswith(f"avatarflow.avatar.{run}.")
