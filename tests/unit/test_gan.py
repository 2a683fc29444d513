"""GAN networks, augmentation and one training step, on tiny configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.gan.augment import diff_augment
from tasks.gan.config import GAN_CONFIGS, GanConfig
from tasks.gan.networks import Discriminator, Generator, ModulatedConv2d
from tasks.gan.sampling import generate_faces, latent_for_seed
from tasks.gan.training import BalancedBatches, GanTrainer, train_gan

TINY = GanConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 8, 16: 8},
                 batch_size=8, augment=(), steps=40, epoch_images=80, seed=3)


def test_presets_resolve_and_bad_values_raise():
    for config in GAN_CONFIGS.values():
        assert Generator(config.with_overrides(channels={r: 4 for r in config.resolutions})).resolution == config.resolution
    with pytest.raises(ValueError, match="power of two"):
        GanConfig(resolution=48)
    with pytest.raises(ValueError, match="channels"):
        GanConfig(resolution=64, channels={4: 8, 8: 8})
    for bad in (dict(gate_min_face_rate=1.5), dict(gate_frechet_ratio=0.0), dict(gate_max_copy_share=-0.1)):
        with pytest.raises(ValueError, match="gate_"):
            GanConfig(**bad)


def test_checkpoints_are_shared_across_time_caps_and_gates_but_not_training_settings(tmp_path):
    from tasks.common.training_io import checkpoint_path

    base = checkpoint_path(tmp_path, "gan", "data", TINY)
    # A run cut short by its cap resumes under a longer one, and judging it again retrains nothing.
    assert checkpoint_path(tmp_path, "gan", "data", TINY.with_overrides(max_seconds=9999.0)) == base
    assert checkpoint_path(tmp_path, "gan", "data", TINY.with_overrides(gate_frechet_ratio=1000.0)) == base
    assert checkpoint_path(tmp_path, "gan", "data", TINY.with_overrides(steps=41)) != base
    assert checkpoint_path(tmp_path, "gan", "data", TINY.with_overrides(learning_rate=0.001)) != base


def test_generator_and_discriminator_shapes_and_gradients():
    torch.manual_seed(0)
    generator, discriminator = Generator(TINY), Discriminator(TINY)
    z = torch.randn(4, TINY.z_dim)
    images = generator(z)
    assert images.shape == (4, 3, 16, 16)
    scores = discriminator(images)
    assert scores.shape == (4,)
    scores.sum().backward()
    for name, param in list(generator.named_parameters()) + list(discriminator.named_parameters()):
        assert param.grad is not None, name
    # Noise strengths start at zero, so their gradient is the only one allowed to vanish.
    zero = [n for n, p in generator.named_parameters() if not p.grad.abs().sum() and "noise_strength" not in n]
    assert zero == []


def test_modulated_conv_demodulates_to_unit_variance():
    torch.manual_seed(0)
    conv = ModulatedConv2d(32, 16, 3, w_dim=8)
    out = conv(torch.randn(64, 32, 12, 12), torch.randn(64, 8))
    # Demodulation keeps the output variance near 1 whatever the style scale.
    assert 0.6 < float(out[:, :, 2:-2, 2:-2].std().detach()) < 1.4


def test_truncation_pulls_towards_the_mean_latent():
    torch.manual_seed(0)
    generator = Generator(TINY)
    for _ in range(20):
        generator.mapping(torch.randn(64, TINY.z_dim), update_w_avg=True)
    z = torch.randn(16, TINY.z_dim)
    w_avg = generator.mapping.w_avg
    far = (generator.mapping(z) - w_avg).norm(dim=1)
    near = (generator.mapping(z, truncation=0.5) - w_avg).norm(dim=1)
    assert torch.allclose(near, 0.5 * far, rtol=1e-4, atol=1e-5)


def test_sampling_is_deterministic_per_seed():
    torch.manual_seed(0)
    generator = Generator(TINY).eval()
    z = np.stack([latent_for_seed(seed, TINY.z_dim) for seed in (1, 2)])
    first, again = generate_faces(generator, z, 0.7, noise_seed=5), generate_faces(generator, z, 0.7, noise_seed=5)
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1])
    assert np.array_equal(latent_for_seed(1, 8), latent_for_seed(1, 8))


def test_diff_augment_keeps_shape_and_passes_gradients():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, ("color", "translation", "cutout"), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_discriminator_step_reduces_its_loss_on_a_fixed_batch():
    trainer = GanTrainer(TINY, torch.device("cpu"))
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    fixed_z = torch.randn(8, TINY.z_dim)

    def d_loss() -> float:
        with torch.no_grad():
            fake = trainer.generator(fixed_z)
            return float(torch.nn.functional.softplus(trainer.discriminator(fake)).mean()
                         + torch.nn.functional.softplus(-trainer.discriminator(real)).mean())
    before = d_loss()
    trainer.generator.requires_grad_(False)
    for _ in range(15):
        loss = torch.nn.functional.softplus(trainer.discriminator(trainer.generator(fixed_z))).mean() + \
            torch.nn.functional.softplus(-trainer.discriminator(real)).mean()
        trainer.d_optimiser.zero_grad()
        loss.backward()
        trainer.d_optimiser.step()
    assert d_loss() < before - 0.05


def test_train_loop_checkpoint_round_trip_resumes_identically():
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    weights = np.ones(20)

    def fresh():
        return GanTrainer(TINY, torch.device("cpu")), BalancedBatches(images, weights, TINY.batch_size, seed=1)
    trainer, batches = fresh()
    reports = train_gan(trainer, batches)
    assert trainer.step_count == TINY.steps and len(reports) == TINY.steps * TINY.batch_size // TINY.epoch_images
    assert all(np.isfinite([r.d_loss, r.g_loss]).all() for r in reports)

    clone, _ = fresh()
    clone.load_state_dict(trainer.state_dict())
    z = torch.randn(2, TINY.z_dim)
    noise = [torch.zeros((2,) + shape) for shape in trainer.generator_ema.noise_shapes]
    assert torch.equal(clone.generator_ema(z, noise=noise), trainer.generator_ema(z, noise=noise))
    assert clone.step_count == trainer.step_count


def test_balanced_batches_follow_label_weights():
    images = np.zeros((10, 4, 4, 3), np.uint8)
    images[9] = 255  # the one image of the rare label
    weights = np.array([1 / 9] * 9 + [1.0])
    batches = BalancedBatches(images, weights, batch_size=400, seed=0)
    share_rare = float((batches.next() > 0).float().mean())
    assert 0.4 < share_rare < 0.6
