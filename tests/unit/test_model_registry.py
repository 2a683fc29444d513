"""Save/load round trips through the MLflow registry, the production alias rule (gates first,
then better than production), and the SHA-256 check before a model is unpickled."""

from __future__ import annotations

import pytest
import torch

from stores.model_registry import (DIFFUSION_MODEL, GAN_MODEL, ModelIntegrityError, ModelMissingError, file_sha256,
                                   load_production_model, production_version, production_versions, register_model)
from stores.tracking import RunTracker
from tasks.diffusion.bundle import DiffusionBundle
from tasks.diffusion.config import DiffusionConfig
from tasks.diffusion.unet import build_denoiser, build_upscaler
from tasks.gan.config import GanConfig
from tasks.gan.networks import Generator
from tasks.quality.gates import psnr_gate, training_length_gate

TINY_GAN = GanConfig(resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 4})
TINY_DIFFUSION = DiffusionConfig(resolution=8, base_channels=8, upscaler_base_channels=8, patch_size=1,
                                 upscaler_patch_size=1, upscaler_crop=16, channel_mults=(1, 2), attention_resolutions=(4,),
                                 timesteps=20, ddim_steps=4)
PASSED = [training_length_gate(10, 10)]


def test_missing_model_names_the_train_command(tmp_path):
    with pytest.raises(ModelMissingError, match="avatarflow train"):
        load_production_model(tmp_path, GAN_MODEL)
    assert production_versions(tmp_path, [GAN_MODEL]) == {GAN_MODEL: None}


def test_gan_round_trip_and_alias_moves_only_for_a_better_metric(tmp_path):
    torch.manual_seed(0)
    generator = Generator(TINY_GAN).eval()
    z = torch.randn(2, TINY_GAN.z_dim)
    noise = [torch.zeros((2,) + shape) for shape in generator.noise_shapes]
    expected = generator(z, noise=noise)
    with RunTracker(tmp_path, "test", "gan"):
        first = register_model(tmp_path, generator, GAN_MODEL, "face_rate", 0.5, higher_is_better=True, gates=PASSED)
        worse = register_model(tmp_path, generator, GAN_MODEL, "face_rate", 0.4, higher_is_better=True, gates=PASSED)
    assert first.promoted and first.version == 1
    assert not worse.promoted and worse.previous_version == 1 and worse.previous_value == 0.5
    loaded, version = load_production_model(tmp_path, GAN_MODEL)
    assert version == 1 and loaded.config == TINY_GAN
    assert torch.allclose(loaded(z, noise=noise), expected)
    with RunTracker(tmp_path, "test", "gan-better"):
        better = register_model(tmp_path, generator, GAN_MODEL, "face_rate", 0.9, higher_is_better=True, gates=PASSED)
    assert better.promoted and production_versions(tmp_path, [GAN_MODEL]) == {GAN_MODEL: 3}


def test_diffusion_bundle_round_trip(tmp_path):
    torch.manual_seed(0)
    bundle = DiffusionBundle(build_denoiser(TINY_DIFFUSION), build_upscaler(TINY_DIFFUSION), TINY_DIFFUSION).eval()
    for parameter in bundle.parameters():  # the zero-initialised output convs would hide a bad load
        parameter.data.normal_(0, 0.05)
    low = torch.rand(1, 3, 8, 8) * 2 - 1
    expected = bundle.upscale(low, torch.Generator().manual_seed(3))
    with RunTracker(tmp_path, "test", "diffusion"):
        register_model(tmp_path, bundle, DIFFUSION_MODEL, "sr_psnr_db", 20.0, higher_is_better=True, gates=PASSED)
    loaded, version = load_production_model(tmp_path, DIFFUSION_MODEL)
    assert version == 1 and loaded.high_resolution == 16
    assert torch.allclose(loaded.upscale(low, torch.Generator().manual_seed(3)), expected)


def test_a_version_that_fails_a_gate_is_registered_with_why_but_never_promoted(tmp_path):
    torch.manual_seed(0)
    bundle = DiffusionBundle(build_denoiser(TINY_DIFFUSION), build_upscaler(TINY_DIFFUSION), TINY_DIFFUSION).eval()
    with RunTracker(tmp_path, "test", "diffusion-capped"):
        # The first version, too: scoring better than "no production" is not enough.
        first = register_model(tmp_path, bundle, DIFFUSION_MODEL, "sr_psnr_db", 25.1, higher_is_better=True,
                               gates=[training_length_gate(33, 1230), psnr_gate(25.1, 27.9)])
    assert not first.promoted and first.failed_gates == ["training_length", "sr_psnr"]
    assert production_version(tmp_path, DIFFUSION_MODEL) is None
    tags = mlflow_client(tmp_path).get_model_version(DIFFUSION_MODEL, "1").tags
    assert tags["gates"] == "failed: training_length, sr_psnr"
    assert tags["gate.sr_psnr"].startswith("fail: SR PSNR 25.10 dB ≤ bicubic 27.90 dB")
    assert tags["gate.training_length"].startswith("fail: stopped by the time cap after 33 of 1230 steps")
    assert tags["promotion"].startswith("not promoted: failed its gates")
    with pytest.raises(ModelMissingError, match="no avatarflow-diffusion model passed its promotion gates .*"
                                                "latest v1: failed: training_length, sr_psnr.*avatarflow train"):
        load_production_model(tmp_path, DIFFUSION_MODEL)
    # The demo's rule (avatarflow demo): generated and refined rows only with both models in production.
    from avatarflow.samples import write_sample_manifest

    trained = None not in production_versions(tmp_path, [GAN_MODEL, DIFFUSION_MODEL]).values()
    manifest, _ = write_sample_manifest(tmp_path / "sample", with_generated=trained)
    text = manifest.read_text()
    assert not trained and "generate:" not in text and ",true," not in text
    with RunTracker(tmp_path, "test", "diffusion-good"):
        second = register_model(tmp_path, bundle, DIFFUSION_MODEL, "sr_psnr_db", 28.4, higher_is_better=True,
                                gates=[training_length_gate(1230, 1230), psnr_gate(28.4, 27.9)])
    assert second.promoted and second.previous_version is None
    assert production_versions(tmp_path, [DIFFUSION_MODEL]) == {DIFFUSION_MODEL: 2}


def mlflow_client(data_dir):
    import mlflow

    from stores.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(data_dir))
    return mlflow.MlflowClient()


def test_model_files_are_hashed_and_a_changed_file_is_not_loaded(tmp_path):
    import mlflow.artifacts

    generator = Generator(TINY_GAN).eval()
    with RunTracker(tmp_path, "test", "gan"):
        register_model(tmp_path, generator, GAN_MODEL, "face_rate", 0.95, higher_is_better=True, gates=PASSED)
    tags = mlflow_client(tmp_path).get_model_version(GAN_MODEL, "1").tags
    # The stored files themselves (a local artifact store hands back their own folder).
    stored = mlflow.artifacts.download_artifacts(f"models:/{GAN_MODEL}/1")
    pickle_file = f"{stored}/data/model.pth"
    assert tags["sha256.data/model.pth"] == file_sha256(pickle_file)
    assert {"sha256.data/pickle_module_info.txt", "sha256.MLmodel"} <= set(tags)
    load_production_model(tmp_path, GAN_MODEL)  # untouched: loads
    with open(pickle_file, "ab") as handle:  # whoever can write the artifact store
        handle.write(b"\x00")
    with pytest.raises(ModelIntegrityError, match="data/model.pth does not match the SHA-256 .* not loaded"):
        load_production_model(tmp_path, GAN_MODEL)
