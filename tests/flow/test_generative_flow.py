"""Training and using the generators through the `avatarflow` command: a produce run before any
model exists (the generate and refine rows fail naming the train command, the style row finishes),
`train --config small` for a handful of steps on shared faces, whose models are registered but fail
the honest promotion gates, a produce run in which the generate and refine rows fail saying so,
then the same training judged by gates explicitly lowered in this test (it resumes from its
checkpoints, so only the judging reruns), and a produce run in which a generate:, a refine=true
and a style= row all reach a finished MP4."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from infra.prefect_server import stop_server
from tests.conftest import free_port, link_training_faces, sample
from tests.flow.test_produce_flow import run_cli

pytestmark = pytest.mark.flow

PER_LABEL = 6
"""Faces linked per label of faces128: a small balanced training set."""
LOWERED_GATES = ["--set", "gan.gate_min_face_rate=0", "--set", "gan.gate_frechet_ratio=1000",
                 "--set", "gan.gate_min_spread_share=0",
                 "--set", "gan.gate_memorisation_ratio=0", "--set", "gan.gate_max_copy_share=1",
                 "--set", "diffusion.gate_psnr_margin_db=-100"]
"""Promotion gates lowered so far that any finished training passes (never outside this test)."""
TINY_STYLE = ["--set", 'style.presets=["sketch"]', "--set", "style.steps=2", "--set", "style.size=64",
              "--set", "style.batch_size=2", "--set", "style.held_out=1", "--set", "style.channels=[4,8,8]",
              "--set", "style.residual_blocks=1"]
"""One preset's style network, trained 2 steps: registered, and refused by the style gates."""


def _training_folder(folder: Path) -> Path:
    link_training_faces(folder, PER_LABEL)
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
    train = ["train", "--config", "small", "--data", str(training), "--data-dir", str(data_dir),
             "--prefect-port", port, "--device", "cpu",
             "--set", "gan.steps=30", "--set", "gan.epoch_images=320", "--set", "gan.eval_samples=16",
             "--set", "diffusion.steps=60", *TINY_STYLE]
    honest = run_cli(*train, cwd=work)
    assert honest.returncode == 0, honest.stdout[-3000:] + honest.stderr[-3000:]
    gated = run_cli(*produce, cwd=work)
    # Test-size models cannot pass the real gates; lowered here, and only here, so that the
    # generate and refine paths still run end to end on them.
    lowered = run_cli(*train, *LOWERED_GATES, cwd=work)
    assert lowered.returncode == 0, lowered.stdout[-3000:] + lowered.stderr[-3000:]
    after = run_cli(*produce, cwd=work)
    assert after.returncode == 0, after.stdout[-3000:] + after.stderr[-3000:]
    # the GAN face that `generate:7` got, as a synthetic data set's identity
    synthesized = run_cli("synthesize", "--identities", "1", "--samples-per-identity", "2", "--seed", "7",
                          "--resolution", "96", "--cycles-samples", "1", "--data-dir", str(data_dir),
                          "--prefect-port", port, cwd=work)
    summaries = sorted((data_dir / "outputs").glob("*/summary.json"))
    yield {"work": work, "data_dir": data_dir, "before": before, "honest": honest, "gated": gated,
           "train": lowered, "after": after, "synthesized": synthesized,
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


def _client(data_dir):
    import mlflow

    from stores.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(data_dir))
    return mlflow.MlflowClient()


def test_test_size_models_fail_the_honest_gates_and_rows_say_so(generated):
    out = generated["honest"].stdout
    refused = [line for line in out.splitlines() if "not promoted (failed its gates" in line]
    assert any("avatarflow-gan v1" in line for line in refused), out[-3000:]
    assert any("avatarflow-diffusion v1" in line for line in refused), out[-3000:]
    client = _client(generated["data_dir"])
    gan, diffusion = (client.get_model_version(name, "1").tags for name in ("avatarflow-gan", "avatarflow-diffusion"))
    assert gan["gates"].startswith("failed: ") and "gate.landmark_frechet" in gan and "gate.memorisation" in gan
    assert diffusion["gates"].startswith("failed: ") and diffusion["gate.sr_psnr"].startswith("fail: ")
    gated = generated["gated"]
    assert gated.returncode == 0, gated.stdout[-2000:] + gated.stderr[-2000:]
    assert "finished: 1 (1 reused)   quarantined: 2" in gated.stdout, gated.stdout[-2000:]
    lines = [line for line in gated.stdout.splitlines() if "passed its promotion gates" in line]
    assert any("id newface: generate:" in line for line in lines), gated.stdout[-2000:]
    assert any("id refined: refine:" in line and "avatarflow-diffusion" in line for line in lines), gated.stdout[-2000:]
    assert "Traceback" not in gated.stdout + gated.stderr


def test_train_registers_both_models_with_metrics(generated):
    from stores.model_registry import production_versions, style_model_name

    out = generated["train"].stdout
    assert "avatarflow-gan v2" in out and "avatarflow-diffusion v2" in out
    client = _client(generated["data_dir"])
    gan = client.get_model_version_by_alias("avatarflow-gan", "production")
    diffusion = client.get_model_version_by_alias("avatarflow-diffusion", "production")
    assert (int(gan.version), int(diffusion.version)) == (2, 2)
    assert "face_rate" in gan.tags and "sr_psnr_db" in diffusion.tags
    assert gan.tags["gates"] == "passed" and len(gan.tags["sha256.data/model.pth"]) == 64
    run = client.get_run(gan.run_id)
    assert run.data.params["resumed_from_step"] == "30"  # judged again from the checkpoint, not retrained
    assert {"final_face_rate", "final_landmark_frechet", "final_mean_face_landmark_frechet",
            "final_sample_nn_distance_median", "final_training_nn_distance_median"} <= set(run.data.metrics)
    first = client.get_run(client.get_model_version("avatarflow-gan", "1").run_id)
    assert {"d_loss", "g_loss", "augment_p"} <= set(first.data.metrics)
    assert len(client.get_metric_history(first.info.run_id, "g_loss")) >= 2  # logged per epoch
    samples = [a.path for a in client.list_artifacts(first.info.run_id, "samples")]
    assert "samples/final.png" in samples and len(samples) >= 3
    run = client.get_run(diffusion.run_id)
    assert {"final_sr_psnr_db", "final_bicubic_psnr_db", "final_sdedit_face_rate"} <= set(run.data.metrics)
    first = client.get_run(client.get_model_version("avatarflow-diffusion", "1").run_id)
    assert {"denoiser_loss", "upscaler_loss"} <= set(first.data.metrics)
    # Each train run registered a 2-step sketch network; the Gram gate refused both.
    for version in ("1", "2"):
        tags = client.get_model_version("avatarflow-style-sketch", version).tags
        assert tags["gate.style_gram"].startswith("fail: ") and tags["promotion"].startswith("not promoted")
        assert float(tags["gram_loss_ratio"]) > 2.0 and "optimisation_landmark_error" in tags
    assert production_versions(generated["data_dir"], [style_model_name("sketch")]) == {style_model_name("sketch"): None}
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
    assert latent.shape == (1, 128) and latent.attrs["model"] == "avatarflow-gan/2"
    draws = latent.attrs["draws"]
    assert draws[-1]["face_found"] and not any(d["face_found"] for d in draws[:-1])
    assert draws[0]["latent_seed"] == 7
    assert newface["latents/diffusion"].attrs["trajectory_seeds"] == [draws[-1]["latent_seed"]]
    record = newface["stages/generate"].attrs.asdict()
    assert record["status"] == "ok" and record["models"] == {"avatarflow-gan": 2, "avatarflow-diffusion": 2}
    face_check = newface["stages/render"].attrs["face_check"]  # the render shows the face throughout
    assert face_check["checked"] >= min(50, face_check["frames"]) and face_check["share"] >= 0.95
    assert newface["generated/portrait"].shape == (512, 512, 3)

    refined = store[f"runs/{run}/refined"]
    before, after = refined["input/portrait"][...], refined["refined/portrait"][...]
    crop_before, crop_after = refined["refined/crop_before"][...], refined["refined/crop_after"][...]
    assert np.abs(crop_before.astype(int) - crop_after).mean() > 0.1  # the refiner ran
    record = refined["stages/refine"].attrs.asdict()
    assert record["models"] == {"avatarflow-diffusion": 2}
    verdict = record["verdict"]
    assert before.shape == after.shape and verdict["detail_before"] > 0
    if verdict["kept"] == "photo":  # a test-size refiner blurs a 512² face: the photo is kept, and why
        assert np.array_equal(before, after) and any("kept the photo" in w for w in record["warnings"])
    else:
        assert verdict["detail_ratio"] >= 0.8 and verdict["landmark_error"] <= 0.05

    style = store[f"runs/{run}/styled/stages/style"].attrs.asdict()
    assert style["style"] == "sketch" and style["gram_loss_reduction"] > 0.3
    # The 2-step sketch network was never promoted, so the optimisation path ran.
    assert style["path"] == "optimisation" and style["model_version"] is None and style["stylise_seconds"] > 0
    assert style["content_landmark_error"] < 0.15


def test_synthesize_renders_the_production_gan_faces(generated):
    import pandas as pd

    from stores.synthetic_store import SyntheticStore

    done = generated["synthesized"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    dataset = generated["data_dir"] / "synthetic" / "faces"
    index = pd.read_parquet(dataset / "index.parquet")
    assert len(index) == 2 and set(index["identity"]) == {"id00000"}
    assert set(index["source"]) == {"generate:7 (avatarflow-diffusion v2, avatarflow-gan v2)"}
    settings = zarr.open_group(str(dataset / "labels.zarr"), mode="r").attrs["settings"]
    assert settings["identities"] == ["generate:7"]
    assert settings["models"] == {"avatarflow-diffusion": 2, "avatarflow-gan": 2}
    # The face's shape moved along the components of the data dir's training faces.
    assert settings["shape_model"]["data_sets"] and settings["shape_model"]["faces"] > 8
    assert [len(shape) for shape in index["shape"]] == [8, 8] and any(abs(c) > 0.1 for c in index["shape"][0])
    stored = SyntheticStore(dataset).read_shape_model()  # the coefficients can be read without the training data
    assert stored is not None and stored[0]["components"].shape == (8, 478, 2) and (stored[0]["deviations"] > 0).all()
    assert stored[1]["n_faces"] == settings["shape_model"]["faces"]
