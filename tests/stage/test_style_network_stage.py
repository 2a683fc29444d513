"""A style network for one preset, trained tiny on real faces and registered in a real MLflow
registry: the gates refuse an untrained network and promote the trained one, and the style stage's
compute then takes the network path for that preset, the optimisation path for a style image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from stores.model_registry import production_versions, style_model_name
from tasks.style import task as style_task
from tasks.style.config import StyleConfig, StyleNetworkConfig
from tasks.style.metrics import content_landmark_error
from tasks.style.training_task import train_and_register
from tests.conftest import SAMPLES, sample

PRESET = "sketch"
TINY = StyleNetworkConfig(presets=(PRESET,), size=128, patch=64, channels=(8, 16, 16), residual_blocks=1, steps=60,
                          batch_size=4, learning_rate=0.01, held_out=2, log_every=20)
"""A test-size network: a minute of training on one core."""
LOSS = StyleConfig(steps=20, device="cpu")
"""The optimisation path it is judged against, shortened to keep the test short (both paths are
scored with the same loss; the full path only lowers its figure further)."""


@pytest.fixture(scope="module")
def faces():
    folder = SAMPLES.parent / "faces128"
    if not folder.is_dir():
        pytest.skip("shared faces128 is not available")
    paths = sorted(folder.glob("*.jpg"))[::50][:40]
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])


@pytest.fixture(scope="module")
def registry(faces, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("style-registry") / "data")
    untrained = train_and_register(faces, data_dir, PRESET, replace(TINY, steps=0), LOSS, "cpu", log=lambda _: None)
    trained = train_and_register(faces, data_dir, PRESET, TINY, LOSS, "cpu", log=lambda _: None)
    return {"data_dir": data_dir, "untrained": untrained, "trained": trained}


def test_an_untrained_network_fails_the_gram_gate(registry):
    untrained = registry["untrained"]
    gates = {gate["gate"]: gate for gate in untrained["gates"]}
    assert not untrained["promoted"] and untrained["version"] == 1
    assert not gates["style_gram"]["passed"]  # the colour-transferred input is all it returns
    assert untrained["final_gram_loss_ratio"] > 2.0
    assert untrained["final_network_gram_loss"] == pytest.approx(untrained["final_coloured_gram_loss"], rel=0.05)


def test_the_trained_network_passes_both_gates_and_is_promoted(registry):
    trained = registry["trained"]
    gates = {gate["gate"]: gate for gate in trained["gates"]}
    assert gates["style_gram"]["passed"], gates["style_gram"]["reason"]
    assert gates["style_landmarks"]["passed"], gates["style_landmarks"]["reason"]
    assert trained["promoted"] and trained["version"] == 2 and trained["steps"] == 60
    assert trained["final_gram_loss_ratio"] <= 2.0
    assert trained["final_network_landmark_error"] <= trained["final_optimisation_landmark_error"]
    name = style_model_name(PRESET)
    assert production_versions(registry["data_dir"], [name]) == {name: 2}


def test_both_figures_are_recorded_in_mlflow(registry):
    import mlflow

    from stores.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(registry["data_dir"]))
    client = mlflow.MlflowClient()
    version = client.get_model_version(style_model_name(PRESET), "2")
    assert version.tags["gates"] == "passed" and version.tags["preset"] == PRESET
    for key in ("network_gram_loss", "optimisation_gram_loss", "gram_loss_ratio", "network_landmark_error",
                "optimisation_landmark_error"):
        assert float(version.tags[key]) >= 0.0
        assert key in client.get_run(version.run_id).data.metrics
    assert len(client.get_metric_history(version.run_id, "gram_loss")) == 3  # logged every 20 steps
    refused = client.get_model_version(style_model_name(PRESET), "1").tags
    assert refused["gate.style_gram"].startswith("fail: ") and refused["promotion"].startswith("not promoted")


@pytest.fixture(scope="module")
def portrait():
    with Image.open(sample("portraits", "sfhq_pt1_00000058.jpg")) as image:
        return np.asarray(image.convert("RGB").resize((256, 256), Image.BICUBIC))


def test_the_stage_uses_the_promoted_network_for_its_preset(registry, portrait):
    style = style_task.resolve_style(PRESET)[1]
    result, record = style_task.stylise_texture(portrait, PRESET, style, LOSS, seed=0, data_dir=registry["data_dir"])
    assert record == {"path": "network", "model": style_model_name(PRESET), "model_version": 2, "working_size": 128}
    assert result.image.shape == portrait.shape
    assert result.gram_loss_after < 0.5 * result.gram_loss_before
    error = content_landmark_error(portrait, result.image)
    assert error is not None and error < 0.15
    # Loaded once per process: a second row reuses the same module.
    again, _ = style_task.stylise_texture(portrait, PRESET, style, LOSS, seed=1, data_dir=registry["data_dir"])
    assert np.array_equal(again.image, result.image)  # a network pass takes no seed
    assert len([key for key in style_task._NETWORKS if key[1] == style_model_name(PRESET)]) == 1


def test_other_presets_and_style_images_take_the_optimisation_path(registry, portrait, tmp_path):
    quick = replace(LOSS, steps=5)
    for value in ("oil", str(tmp_path / "mine.png")):  # oil has no network; an image never has one
        Image.fromarray(portrait[::-1]).save(tmp_path / "mine.png")
        _, record = style_task.stylise_texture(portrait, value, portrait[::-1].copy(), quick, seed=0,
                                               data_dir=registry["data_dir"])
        assert record["path"] == "optimisation" and record["model_version"] is None
    _, record = style_task.stylise_texture(portrait, PRESET, style_task.resolve_style(PRESET)[1], quick, seed=0,
                                           data_dir=None)
    assert record["path"] == "optimisation"  # no registry given

