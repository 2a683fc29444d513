"""Diffusion stage: UNet shapes and gradients, cosine schedule, DDIM/SDEdit/SR sampling, training."""

import dataclasses

import pytest
import torch

from tasks.diffusion.config import DIFFUSION_CONFIGS, DiffusionConfig
from tasks.diffusion.sampling import ddim_sample, ddim_timesteps, sdedit, super_resolve, upsample_condition
from tasks.diffusion.schedule import cosine_alpha_bar, predict_x0, q_sample
from tasks.diffusion.training import DiffusionTrainer, diffusion_loss, fit, make_sr_pair, random_batch
from tasks.diffusion.unet import UNet, build_denoiser, build_upscaler

torch.set_num_threads(1)

TINY = dict(base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), res_blocks=1, resolution=16)
TIMESTEPS = 100


def tiny_unet(in_channels: int = 3, seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(in_channels=in_channels, out_channels=3, **{**TINY, **kwargs})


def randomise_output(model: UNet, seed: int = 1) -> UNet:
    # The output conv starts at zero (ε = 0 everywhere); sampling tests need a net whose output depends on x.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.conv_out.weight.copy_(0.05 * torch.randn(model.conv_out.weight.shape, generator=generator))
    return model


def images(n: int, side: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=generator) * 2 - 1


def test_unet_shapes_unconditional_conditional_and_patched():
    x, t = images(2), torch.tensor([0, 57])
    assert tiny_unet()(x, t).shape == (2, 3, 16, 16)
    assert tiny_unet(in_channels=6)(x, t, cond=images(2, seed=1)).shape == (2, 3, 16, 16)
    assert tiny_unet(patch_size=2)(x, t).shape == (2, 3, 16, 16)
    # Convolutional: a training crop of another multiple of the side also works.
    assert tiny_unet()(images(2, side=8), t).shape == (2, 3, 8, 8)


def test_unet_rejects_missing_unexpected_or_misshaped_condition():
    x, t = images(2), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="conditional"):
        tiny_unet(in_channels=6)(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        tiny_unet()(x, t, cond=x)
    with pytest.raises(ValueError, match="cond must have shape"):
        tiny_unet(in_channels=6)(x, t, cond=images(2, side=8))
    with pytest.raises(ValueError, match="multiples"):
        tiny_unet()(images(2, side=9), t)
    with pytest.raises(ValueError, match="t must be"):
        tiny_unet()(x, torch.tensor([1]))


def test_unet_has_attention_only_at_the_configured_sides():
    with_attention = tiny_unet(attention_resolutions=(8,))
    without = tiny_unet(attention_resolutions=())
    count = lambda model: sum(type(m).__name__ == "AttentionBlock" for m in model.modules())  # noqa: E731
    # Side 8 is the bottom level: one encoder block, the middle, two decoder blocks.
    assert count(with_attention) == 4
    assert count(without) == 0


def test_output_starts_at_zero_and_gradients_reach_every_parameter():
    model = tiny_unet(in_channels=6)
    x, cond, t = images(4), images(4, seed=1), torch.tensor([3, 20, 50, 90])
    assert torch.all(model(x, t, cond) == 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    generator = torch.Generator().manual_seed(0)
    # Step 1: only the zero-initialised output conv gets a gradient; afterwards everything does.
    diffusion_loss(model, x, alpha_bar, generator, cond).backward()
    assert model.conv_out.weight.grad.abs().sum() > 0
    optimizer.step()
    optimizer.zero_grad()
    diffusion_loss(model, x, alpha_bar, generator, cond).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_cosine_schedule_is_monotone_inside_unit_interval():
    alpha_bar = cosine_alpha_bar(1000)
    assert alpha_bar.shape == (1000,) and alpha_bar.dtype == torch.float32
    assert torch.all(alpha_bar > 0) and torch.all(alpha_bar < 1)
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])
    assert alpha_bar[0] > 0.999 and alpha_bar[-1] < 1e-3
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    assert betas.max() <= 0.999 + 1e-6


def test_q_sample_endpoints_and_inverse():
    alpha_bar = cosine_alpha_bar(1000)
    x0, noise = images(3), images(3, seed=5)
    assert torch.allclose(q_sample(x0, torch.zeros(3, dtype=torch.long), noise, alpha_bar), x0, atol=1e-2)
    late = q_sample(x0, torch.full((3,), 999, dtype=torch.long), noise, alpha_bar)
    assert torch.allclose(late, noise, atol=1e-2)
    t = torch.tensor([10, 400, 800])
    assert torch.allclose(predict_x0(q_sample(x0, t, noise, alpha_bar), t, noise, alpha_bar), x0, atol=1e-4)


def test_ddim_timesteps_descend_and_count_the_model_calls():
    assert ddim_timesteps(1000, 4) == [999, 749, 500, 250]
    assert ddim_timesteps(1000, 3, start_step=299) == [299, 199, 100]
    assert ddim_timesteps(10, 50) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 4, start_step=1000)


def test_ddim_is_deterministic_for_eta_zero_and_seeded_for_eta_one():
    model = randomise_output(tiny_unet())
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    run = lambda seed, eta: ddim_sample(  # noqa: E731
        model, (2, 3, 16, 16), alpha_bar, 5, torch.Generator().manual_seed(seed), eta=eta
    )
    first = run(0, 0.0)
    assert first.shape == (2, 3, 16, 16) and first.abs().max() <= 1.0
    assert torch.equal(first, run(0, 0.0))
    assert not torch.equal(first, run(1, 0.0))
    assert torch.equal(run(3, 1.0), run(3, 1.0))
    assert not torch.equal(run(3, 1.0), run(3, 0.0))


def test_ddim_with_an_exact_noise_oracle_recovers_the_image():
    # A "model" that knows x0 returns the exact v, so DDIM must land on x0 from any start.
    target = images(2).clamp(-0.9, 0.9)
    alpha_bar = cosine_alpha_bar(1000)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t, cond=None):
            a = alpha_bar[t].view(-1, 1, 1, 1)
            eps = (x - a.sqrt() * target) / (1 - a).sqrt()
            return a.sqrt() * eps - (1 - a).sqrt() * target

    result = ddim_sample(Oracle(), tuple(target.shape), alpha_bar, 10, torch.Generator().manual_seed(0))
    assert torch.allclose(result, target, atol=1e-4)


def test_sdedit_strength_zero_is_identity_and_positive_strength_changes_little_at_low_noise():
    model = randomise_output(tiny_unet())
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    x = images(2)
    same, trace = sdedit(model, x, alpha_bar, 0.0, 10, torch.Generator().manual_seed(0))
    assert torch.equal(same, x) and trace.noise is None and trace.steps == 0
    refined, trace = sdedit(model, x, alpha_bar, 0.3, 10, torch.Generator().manual_seed(0))
    assert refined.shape == x.shape and not torch.equal(refined, x)
    assert trace.start_step == 29 and trace.steps == 3 and trace.noise.shape == x.shape
    again, _ = sdedit(model, x, alpha_bar, 0.3, 10, torch.Generator().manual_seed(0))
    assert torch.equal(refined, again)


def test_super_resolve_output_is_factor_times_larger_and_in_range():
    upscaler = randomise_output(tiny_unet(in_channels=6))
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    low = images(2, side=8)
    for strength in (1.0, 0.5):
        high = super_resolve(upscaler, low, alpha_bar, 4, torch.Generator().manual_seed(0), factor=2, strength=strength)
        assert high.shape == (2, 3, 16, 16)
        assert high.abs().max() <= 1.0
    # A model that predicts no residual noise back gives the bicubic image exactly at strength 1.
    bicubic = upsample_condition(low, 2)
    assert (super_resolve(upscaler, low, alpha_bar, 4, torch.Generator().manual_seed(0)) - bicubic).abs().mean() < 1.0


def test_make_sr_pair_condition_is_a_blurred_copy_of_the_target():
    x_hi = images(2)
    target, cond = make_sr_pair(x_hi, 2, residual_scale=4.0)
    assert cond.shape == x_hi.shape and torch.allclose(cond + target / 4.0, x_hi, atol=1e-6)
    # The condition keeps the coarse content: its 2× area average matches the target's.
    low = torch.nn.functional.avg_pool2d(x_hi, 2)
    assert torch.allclose(upsample_condition(low, 2), cond)
    assert (cond - x_hi).abs().mean() < x_hi.abs().mean()
    with pytest.raises(ValueError):
        make_sr_pair(images(1, side=15), 2)


def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = UNet(**{**TINY, "base_channels": 16})
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    trainer = DiffusionTrainer(model, alpha_bar, learning_rate=3e-3, ema_decay=0.9, seed=0)
    x0 = images(4).mul(0.5)
    generator = torch.Generator().manual_seed(7)
    probes = [(torch.randint(0, TIMESTEPS, (4,), generator=generator), torch.randn(4, 3, 16, 16, generator=generator))
              for _ in range(4)]

    def probe_loss() -> float:
        with torch.no_grad():
            return sum(float(diffusion_loss(model, x0, alpha_bar, generator, t=t, noise=n)) for t, n in probes) / 4

    before = probe_loss()
    # v = 0 predictions: the loss is E[v²] = ᾱ·1 + (1 − ᾱ)·E[x0²], between E[x0²] and 1.
    assert float(x0.square().mean()) - 0.05 < before < 1.15
    for _ in range(30):
        trainer.step(x0)
    assert trainer.step_count == 30
    assert probe_loss() < 0.8 * before


def test_trainer_state_dict_round_trip_restores_outputs_and_resumes_identically():
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    x0, t = images(2), torch.tensor([5, 60])
    trainer = DiffusionTrainer(tiny_unet(), alpha_bar, learning_rate=1e-3, ema_decay=0.9, seed=3)
    for _ in range(2):
        trainer.step(x0)
    state = trainer.state_dict()
    copy = DiffusionTrainer(tiny_unet(seed=9), alpha_bar, learning_rate=1e-3, ema_decay=0.9, seed=4)
    copy.load_state_dict(state)
    assert copy.step_count == 2
    with torch.no_grad():
        assert torch.equal(copy.model(x0, t), trainer.model(x0, t))
        assert torch.equal(copy.ema(x0, t), trainer.ema(x0, t))
    # Optimiser moments and the noise generator came along: the next step matches exactly.
    assert copy.step(x0) == trainer.step(x0)
    with torch.no_grad():
        assert torch.equal(copy.model(x0, t), trainer.model(x0, t))


def test_a_step_split_into_micro_batches_is_the_whole_batch_step():
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    x0, cond, t = images(6), images(6, seed=1), torch.tensor([5, 60])
    whole = DiffusionTrainer(randomise_output(tiny_unet(in_channels=6)), alpha_bar, learning_rate=1e-3,
                             ema_decay=0.9, seed=2)
    split = DiffusionTrainer(randomise_output(tiny_unet(in_channels=6)), alpha_bar, learning_rate=1e-3,
                             ema_decay=0.9, seed=2, micro_batch_size=4)  # parts of 4 and 2
    for _ in range(2):
        assert abs(split.step(x0, cond) - whole.step(x0, cond)) < 1e-6
    with torch.no_grad():
        moved = (whole.model(x0[:2], t, cond[:2]) - whole.ema(x0[:2], t, cond[:2])).abs().max()
        assert moved > 1e-4  # the steps changed the weights, so agreeing below means something
        assert torch.allclose(split.model(x0[:2], t, cond[:2]), whole.model(x0[:2], t, cond[:2]), atol=1e-5)
        assert torch.allclose(split.ema(x0[:2], t, cond[:2]), whole.ema(x0[:2], t, cond[:2]), atol=1e-5)


def test_fit_stops_at_the_step_budget_or_the_time_cap():
    alpha_bar = cosine_alpha_bar(TIMESTEPS)
    trainer = DiffusionTrainer(tiny_unet(), alpha_bar, learning_rate=1e-3, ema_decay=0.9, seed=0)
    data, generator = images(5), torch.Generator().manual_seed(0)
    seen = []
    result = fit(trainer, lambda: (random_batch(data, 2, generator), None), 3, 60.0, lambda s, l: seen.append(s))
    assert (result.steps, result.stopped_by, seen) == (3, "steps", [1, 2, 3])
    result = fit(trainer, lambda: (random_batch(data, 2, generator), None), 100, 1e-9)
    assert (result.steps, result.stopped_by) == (3, "time")


def test_presets_validate_and_build_nets_of_the_configured_sizes():
    for name, config in DIFFUSION_CONFIGS.items():
        assert isinstance(config, DiffusionConfig), name
        with torch.device("meta"):  # structure only, no weight memory
            denoiser, upscaler = build_denoiser(config), build_upscaler(config)
        assert denoiser.resolution == config.resolution and not denoiser.conditional
        assert upscaler.resolution == config.resolution * config.upscale and upscaler.conditional
    small = DIFFUSION_CONFIGS["small"]
    assert small.with_overrides(steps=2).steps == 2 and small.steps != 2
    assert dataclasses.replace(small) == small
    for bad in (dict(resolution=30), dict(sdedit_strength=1.5), dict(ddim_steps=0), dict(upscaler_crop=50),
                dict(max_seconds=0.0), dict(attention_heads=5), dict(ema_decay=1.0)):
        with pytest.raises(ValueError):
            small.with_overrides(**bad)
