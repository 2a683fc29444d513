"""Training and using the generators through the `avatarflow` command: a produce run before any
model exists (the generate and refine rows fail naming the train command, the style row finishes),
`train --config small` for a handful of steps on shared faces, then a produce run in which a
generate:, a refine=true and a style= row all reach a finished MP4."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from infra.prefect_server import stop_server
from tests.conftest import SAMPLES, free_port, sample
from tests.flow.test_produce_flow import run_cli

pytestmark = pytest.mark.flow

FACES = SAMPLES.parent / "faces128"
PER_LABEL = 6
"""Faces linked per label of faces128: a small balanced training set."""


def _training_folder(folder: Path) -> Path:
    if not FACES.is_dir():
        pytest.skip("shared faces128 is not available")
    folder.mkdir()
    taken: dict[str, int] = {}
    for path in sorted(FACES.glob("*.jpg")):
        label = "_".join(path.name.split("_")[:2])
        if taken.get(label, 0) < PER_LABEL:
            taken[label] = taken.get(label, 0) + 1
            os.symlink(path, folder / path.name)
    for name in ("sfhq_pt1_00000058.jpg", "sfhq_pt2_00000137.jpg"):
        os.symlink(sample("portraits", name), folder / name)
    return folder


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from PIL import Image
    from skimage import data

    work = tmp_path_factory.mktemp("generative")
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    portrait = sample("portraits", "sfhq_pt1_00000161.jpg")
    manifest = work / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "portrait", "identity", "refine", "style", "text", "resolution"])
        writer.writerow(["newface", "", "generate:7", "", "", "I am nobody you know.", "128"])
        writer.writerow(["refined", str(portrait), "", "true", "", "A little sharper.", "128"])
        writer.writerow(["styled", "astronaut.png", "", "", "sketch", "Drawn by hand.", "128"])
    data_dir = work / "data"
    port = str(free_port())  # one server for all three commands
    produce = ["produce", str(manifest), "--data-dir", str(data_dir), "--prefect-port", port,
               "--input-root", str(portrait.parent)]
    before = run_cli(*produce, cwd=work)
    training = _training_folder(work / "faces")
    train = run_cli("train", "--config", "small", "--data", str(training), "--data-dir", str(data_dir),
                    "--prefect-port", port, "--device", "cpu",
                    "--set", "gan.steps=30", "--set", "gan.epoch_images=320", "--set", "gan.eval_samples=16",
                    "--set", "diffusion.steps=300", cwd=work)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    after = run_cli(*produce, cwd=work)
    assert after.returncode == 0, after.stdout[-3000:] + after.stderr[-3000:]
    summaries = sorted((data_dir / "outputs").glob("*/summary.json"))
    yield {"work": work, "data_dir": data_dir, "before": before, "train": train, "after": after,
           "summary": json.loads(summaries[0].read_text()), "portrait": portrait}
    stop_server(data_dir / "prefect")


def test_rows_needing_untrained_models_fail_naming_the_train_command(generated):
    before = generated["before"]
    assert before.returncode == 0, before.stdout[-2000:] + before.stderr[-2000:]
    assert "finished: 1 (0 reused)   quarantined: 2" in before.stdout
    lines = [line for line in before.stdout.splitlines() if "avatarflow train" in line]
    assert any("id newface: generate:" in line for line in lines), before.stdout[-2000:]
    assert any("id refined: refine:" in line for line in lines), before.stdout[-2000:]
    assert "Traceback" not in before.stdout + before.stderr


def test_train_registers_both_models_with_metrics(generated):
    import mlflow

    from stores.tracking import tracking_uri

    out = generated["train"].stdout
    assert "avatarflow-gan v1" in out and "avatarflow-diffusion v1" in out
    mlflow.set_tracking_uri(tracking_uri(generated["data_dir"]))
    client = mlflow.MlflowClient()
    gan = client.get_model_version_by_alias("avatarflow-gan", "production")
    diffusion = client.get_model_version_by_alias("avatarflow-diffusion", "production")
    assert "face_rate" in gan.tags and "sr_psnr_db" in diffusion.tags
    run = client.get_run(gan.run_id)
    assert {"final_face_rate", "final_landmark_frechet", "d_loss", "g_loss", "augment_p"} <= set(run.data.metrics)
    assert len(client.get_metric_history(gan.run_id, "g_loss")) >= 2  # logged per epoch
    samples = [a.path for a in client.list_artifacts(gan.run_id, "samples")]
    assert "samples/final.png" in samples and len(samples) >= 3
    run = client.get_run(diffusion.run_id)
    assert {"final_sr_psnr_db", "final_bicubic_psnr_db", "final_sdedit_face_rate", "denoiser_loss",
            "upscaler_loss"} <= set(run.data.metrics)
    checkpoints = list((generated["data_dir"] / "training").glob("*/*/checkpoint.pt"))
    assert len(checkpoints) == 2
    dataset = zarr.open_group(str(generated["data_dir"] / "datasets.zarr"), mode="r")["datasets/faces"]
    assert dataset["crops_64"].shape[1:] == (64, 64, 3) and dataset["crops_128"].shape[1:] == (128, 128, 3)
    assert dataset["uv"].shape[0] == dataset["crops_64"].shape[0] >= 40


def test_generate_refine_and_style_rows_finish(generated):
    from tasks.render.runner import probe_video

    summary = generated["summary"]
    assert "finished: 3" in generated["after"].stdout, generated["after"].stdout[-2000:]
    folder = Path(summary["output_folder"])
    for avatar in ("newface", "refined", "styled"):
        video = probe_video(folder / avatar / "talk.mp4")
        assert video["codec"] == "h264" and video["n_frames"] > 10
        assert (folder / avatar / "avatar.glb").stat().st_size > 0


def test_store_records_latents_draws_models_and_style_metrics(generated):
    store = zarr.open_group(str(generated["data_dir"] / "avatars.zarr"), mode="r")
    run = generated["summary"]["run"]
    newface = store[f"runs/{run}/newface"]
    latent = newface["latents/gan"]
    assert latent.shape == (1, 128) and latent.attrs["model"] == "avatarflow-gan/1"
    draws = latent.attrs["draws"]
    assert draws[-1]["face_found"] and not any(d["face_found"] for d in draws[:-1])
    assert draws[0]["latent_seed"] == 7
    assert newface["latents/diffusion"].attrs["trajectory_seeds"] == [draws[-1]["latent_seed"]]
    record = newface["stages/generate"].attrs.asdict()
    assert record["status"] == "ok" and record["models"] == {"avatarflow-gan": 1, "avatarflow-diffusion": 1}
    assert newface["generated/portrait"].shape == (512, 512, 3)

    refined = store[f"runs/{run}/refined"]
    before, after = refined["input/portrait"][...], refined["refined/portrait"][...]
    assert before.shape == after.shape and np.abs(before.astype(int) - after).mean() > 0.1
    assert refined["stages/refine"].attrs["models"] == {"avatarflow-diffusion": 1}

    style = store[f"runs/{run}/styled/stages/style"].attrs.asdict()
    assert style["style"] == "sketch" and style["gram_loss_reduction"] > 0.3
    assert style["content_landmark_error"] < 0.15
