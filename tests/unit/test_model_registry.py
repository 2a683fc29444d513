"""Save/load round trips through the MLflow registry, and the production alias rule."""

from __future__ import annotations

import pytest
import torch

from stores.model_registry import (DIFFUSION_MODEL, GAN_MODEL, ModelMissingError, load_production_model,
                                   production_versions, register_model)
from stores.tracking import RunTracker
from tasks.diffusion.bundle import DiffusionBundle
from tasks.diffusion.config import DiffusionConfig
from tasks.diffusion.unet import build_denoiser, build_upscaler
from tasks.gan.config import GanConfig
from tasks.gan.networks import Generator

TINY_GAN = GanConfig(resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 4})
TINY_DIFFUSION = DiffusionConfig(resolution=8, base_channels=8, upscaler_base_channels=8, patch_size=1,
                                 upscaler_patch_size=1, upscaler_crop=16, channel_mults=(1, 2), attention_resolutions=(4,),
                                 timesteps=20, ddim_steps=4)


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
        first = register_model(tmp_path, generator, GAN_MODEL, "face_rate", 0.5, higher_is_better=True)
        worse = register_model(tmp_path, generator, GAN_MODEL, "face_rate", 0.4, higher_is_better=True)
    assert first.promoted and first.version == 1
    assert not worse.promoted and worse.previous_version == 1 and worse.previous_value == 0.5
    loaded, version = load_production_model(tmp_path, GAN_MODEL)
    assert version == 1 and loaded.config == TINY_GAN
    assert torch.allclose(loaded(z, noise=noise), expected)
    with RunTracker(tmp_path, "test", "gan-better"):
        better = register_model(tmp_path, generator, GAN_MODEL, "face_rate", 0.9, higher_is_better=True)
    assert better.promoted and production_versions(tmp_path, [GAN_MODEL]) == {GAN_MODEL: 3}


def test_diffusion_bundle_round_trip(tmp_path):
    torch.manual_seed(0)
    bundle = DiffusionBundle(build_denoiser(TINY_DIFFUSION), build_upscaler(TINY_DIFFUSION), TINY_DIFFUSION).eval()
    for parameter in bundle.parameters():  # the zero-initialised output convs would hide a bad load
        parameter.data.normal_(0, 0.05)
    low = torch.rand(1, 3, 8, 8) * 2 - 1
    expected = bundle.upscale(low, torch.Generator().manual_seed(3))
    with RunTracker(tmp_path, "test", "diffusion"):
        register_model(tmp_path, bundle, DIFFUSION_MODEL, "sr_psnr_db", 20.0, higher_is_better=True)
    loaded, version = load_production_model(tmp_path, DIFFUSION_MODEL)
    assert version == 1 and loaded.high_resolution == 16
    assert torch.allclose(loaded.upscale(low, torch.Generator().manual_seed(3)), expected)
