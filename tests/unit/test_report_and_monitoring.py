"""The dashboard's pure HTML building, and the rows and events the run monitoring publishes."""

import re
import uuid
from datetime import timedelta

import pytest

from infra.automations import FailureAutomationConfig, failure_automation
from stores.report import axis_step, render_report_html, stage_names, timing_chart_svg
from tasks.batch.monitoring import (FAILURE_EVENT, artifact_key, avatar_rows, failure_event, quarantine_rows,
                                    run_headline, training_rows)

AVATARS = [
    {"id": "b", "line": 3, "seconds": {"export": 1.5, "render": 2.0, "ingest": 1.0, "lipsync": 0.5}, "video_seconds": 1.5,
     "outputs": {"video": "/data/outputs/r/b/talk.mp4", "poster": "s3://bucket/outputs/r/b/poster.png",
                 "glb": "/data/outputs/r/b/avatar.glb", "blend": "/data/outputs/r/b/avatar.blend"}},
    {"id": "a", "line": 2, "reused": True, "seconds": {"ingest": 0.5, "style": 1.0, "reconstruct": 2.5},
     "video_seconds": 2.0, "outputs": {"poster": "/data/outputs/r/a/poster.png", "glb": "/data/outputs/r/a/avatar.glb"}},
]
FAILURES = [{"line": 4, "id": 'x"><script>alert(1)</script>', "stage": "ingest", "error": "<img src=x onerror=alert(1)>"}]


def test_stages_follow_the_pipeline_then_the_order_met():
    assert stage_names(AVATARS) == ["ingest", "reconstruct", "style", "render", "export", "lipsync"]


@pytest.mark.parametrize("maximum, step", [(0.0, 1.0), (4.0, 1.0), (9.0, 2.0), (12.2, 5.0), (0.03, 0.01), (700.0, 200.0)])
def test_axis_steps_are_one_two_five(maximum, step):
    assert axis_step(maximum) == pytest.approx(step)


def test_chart_bars_are_proportional_and_stack_in_stage_order():
    svg = timing_chart_svg(AVATARS)
    bars = re.findall(r'<rect class="bar" data-avatar="(\w+)" data-stage="(\w+)" data-seconds="([\d.]+)" '
                      r'x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    assert [(avatar, stage) for avatar, stage, *_ in bars] == [
        ("b", "ingest"), ("b", "render"), ("b", "export"), ("b", "lipsync"), ("a", "ingest"), ("a", "reconstruct"),
        ("a", "style")]
    scale = {float(width) / float(seconds) for _, _, seconds, _, width in bars}
    assert max(scale) - min(scale) < 0.1
    b_bars = [bar for bar in bars if bar[0] == "b"]
    assert float(b_bars[1][3]) == pytest.approx(float(b_bars[0][3]) + float(b_bars[0][4]), abs=0.15)
    assert "a (reused)" in svg and "5.0 s" in svg
    assert timing_chart_svg([{"id": "z"}]).startswith("<p")


def test_page_links_relative_to_the_report_and_escapes_user_text():
    page = render_report_html('run<1>', AVATARS, FAILURES, {"realtime_factor": None, "wall_seconds": 3.0,
                                                              "video_wall_seconds": 2.5})
    assert 'src="b/talk.mp4"' in page and 'poster="b/poster.png"' in page
    assert '<img src="a/poster.png"' in page and 'href="a/avatar.glb"' in page and "a/talk.mp4" not in page
    assert "<script>alert" not in page and "<img src=x" not in page and "run&lt;1&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not re.search(r'(src|href|poster)="(https?:|//|/)', page)
    assert '<div class="stat" id="stat-realtime"><b>—</b>' in page and "3.00 s" in page
    assert '<div class="stat" id="stat-video-wall"><b>2.50 s</b><span>wall time to the last MP4' in page
    assert 'href="b/avatar.glb"' in page and 'href="b/avatar.blend"' in page
    assert render_report_html("r", [], [], {}).count("No avatar finished") == 1


def test_run_headline_gives_the_time_to_the_last_video():
    summary = {"realtime_factor": 1.25, "wall_seconds": 20.04, "video_wall_seconds": 16.01, "output_folder": "/o/r"}
    assert run_headline("r", 2, 1, summary) == (
        "Run `r`: 2 finished, 1 quarantined; 1.25× real time, last MP4 at 16.0 s of 20.0 s. Outputs: `/o/r`")
    assert run_headline("r", 0, 3, {"realtime_factor": None, "video_wall_seconds": None}) == (
        "Run `r`: 0 finished, 3 quarantined; —. Outputs: ``")


def test_artifact_keys_are_lowercase_dashes():
    assert artifact_key("Photo_Batch-1a2b3c4d5e", "progress") == "photo-batch-1a2b3c4d5e-progress"
    assert re.fullmatch(r"[a-z0-9-]+", artifact_key("ÄÖ..__", "avatars"))


def test_failure_event_names_the_avatar_flow_run_and_deployment():
    event = failure_event("r1", {"id": "b", "line": 4, "stage": "render", "error": "Blender crashed"}, "fr-1", "dep-1")
    assert event["event"] == FAILURE_EVENT
    assert event["resource"]["prefect.resource.id"] == "avatarflow.avatar.r1.b"
    assert event["related"] == [
        {"prefect.resource.id": "prefect.flow-run.fr-1", "prefect.resource.role": "flow-run"},
        {"prefect.resource.id": "prefect.deployment.dep-1", "prefect.resource.role": "deployment"}]
    assert event["payload"] == {"run": "r1", "id": "b", "line": 4, "stage": "render", "error": "Blender crashed"}
    unnamed = failure_event("r1", {"id": "", "line": 7, "stage": "manifest", "error": "no id"}, "fr-1", None)
    assert unnamed["resource"]["prefect.resource.id"] == "avatarflow.avatar.r1.line-7"
    assert [r["prefect.resource.role"] for r in unnamed["related"]] == ["flow-run"]


def test_avatar_rows_share_columns_and_follow_the_manifest():
    rows = avatar_rows(AVATARS, FAILURES)
    assert [(r["line"], r["status"]) for r in rows] == [(2, "reused"), (3, "finished"), (4, "failed")]
    assert len({tuple(r) for r in rows}) == 1
    assert list(rows[0])[3:9] == ["ingest_s", "reconstruct_s", "style_s", "render_s", "export_s", "lipsync_s"]
    assert rows[1]["render_s"] == 2.0 and rows[1]["export_s"] == 1.5 and rows[1]["style_s"] is None
    assert rows[1]["total_s"] == 5.0 and rows[0]["export_s"] is None
    assert rows[2]["failed_stage"] == "ingest" and rows[2]["total_s"] is None
    assert quarantine_rows(FAILURES) == [{"line": 4, "id": FAILURES[0]["id"], "stage": "ingest",
                                          "error": FAILURES[0]["error"]}]


def test_training_rows_list_dataset_and_models():
    result = {"dataset": {"name": "faces", "n_images": 120, "seconds": 12.34, "reused": True},
              "gan": {"model": "avatarflow-gan", "version": 3, "promoted": True, "steps": 400, "seconds": 600.0,
                      "final_face_rate": 0.8125, "train_images": 25600, "run_id": "abc"},
              "diffusion": {"model": "avatarflow-diffusion", "version": 2, "promoted": False,
                            "steps": {"denoiser": 300, "upscaler": 300}, "seconds": 500.0, "final_sr_psnr_db": 27.5}}
    rows = training_rows(result)
    assert [r["part"] for r in rows] == ["dataset", "gan", "diffusion"]
    assert rows[0]["images"] == 120 and rows[0]["metrics"] == "reused"
    assert rows[1]["metrics"] == "face_rate=0.8125" and rows[1]["promoted"] is True and rows[1]["steps"] == "400"
    assert rows[2]["steps"] == "denoiser 300, upscaler 300" and rows[2]["promoted"] is False


def test_failure_automation_pauses_the_deployment_per_flow_run():
    deployment = uuid.uuid4()
    automation = failure_automation(deployment, threshold=5, within_seconds=120, deployment_full_name="produce/nightly")
    trigger = automation.trigger
    assert automation.name == "avatarflow: pause produce/nightly on avatar failures"
    assert trigger.expect == {FAILURE_EVENT} and trigger.threshold == 5 and trigger.within == timedelta(seconds=120)
    assert trigger.for_each == {"related:flow-run:prefect.resource.id"}
    assert trigger.match_related.model_dump() == {"prefect.resource.role": "deployment",
                                                  "prefect.resource.id": f"prefect.deployment.{deployment}"}
    [action] = automation.actions
    assert action.type == "pause-deployment" and action.deployment_id == deployment
    assert automation.owner_resource == f"prefect.deployment.{deployment}"


def test_failure_automation_settings_are_checked_and_read_from_the_environment(monkeypatch):
    with pytest.raises(ValueError, match="threshold"):
        FailureAutomationConfig(threshold=0)
    with pytest.raises(ValueError, match="within_seconds"):
        FailureAutomationConfig(within_seconds=0)
    assert FailureAutomationConfig.from_environment() == FailureAutomationConfig(3, 600.0)
    monkeypatch.setenv("AVATARFLOW_FAILURE_THRESHOLD", "2")
    monkeypatch.setenv("AVATARFLOW_FAILURE_WINDOW_SECONDS", "90")
    assert FailureAutomationConfig.from_environment() == FailureAutomationConfig(2, 90.0)
