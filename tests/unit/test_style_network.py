"""The feed-forward style network on tiny inputs: shapes, determinism, the identity start, the
shared losses, a few training steps that lower the objective, and its config."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tasks.style.config import STYLE_PRESET_NAMES, StyleConfig, StyleNetworkConfig
from tasks.style.features import RandomFeatureNet
from tasks.style.losses import StyleTargets, content_loss, gram_loss, tv_loss
from tasks.style.network import StyleNetwork
from tasks.style.network_training import coloured_faces, train_style_network
from tasks.style.presets import STYLE_PRESETS
from tasks.style.transfer import StyleLoss, stylise_with_network

TINY = StyleNetworkConfig(size=32, patch=16, channels=(4, 8, 8), residual_blocks=1, steps=30, batch_size=2,
                          learning_rate=0.01, log_every=10)
LOSS = StyleConfig(size=32, feature_channels=(8, 16, 16), device="cpu")


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        channels = [np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y) + rng.uniform(0, 6))
                    for _ in range(3)]
        images.append(((np.stack(channels, axis=-1) * 0.35 + 0.5) * 255).astype(np.uint8))
    return np.stack(images)


def stripes(size: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    on = ((x + y) // 3) % 2 == 0
    return np.where(on[..., None], (200, 60, 30), (30, 40, 120)).astype(np.uint8)


def _perturbed(network: StyleNetwork) -> StyleNetwork:
    """Random weights in the zero-initialised last conv, so the network is no longer the identity."""
    with torch.no_grad():
        last = network.decoder[-1]
        last.weight.copy_(torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(9)) * 0.1)
    return network


def test_shapes_any_size_and_output_range():
    network = _perturbed(StyleNetwork(TINY, "oil"))
    for shape in ((1, 3, 32, 32), (2, 3, 30, 45), (1, 3, 17, 64)):
        images = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        output = network(images)
        assert output.shape == images.shape
        assert output.min() >= -1.0 and output.max() <= 1.0
        assert not torch.equal(output, images)
    assert network.size == 32 and network.preset == "oil"
    with pytest.raises(ValueError, match="N×3×H×W"):
        network(torch.zeros(3, 32, 32))


def test_weights_are_fixed_by_the_seed_and_an_untrained_network_is_the_identity():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    first, again = StyleNetwork(TINY, "oil"), StyleNetwork(TINY, "oil")
    other = StyleNetwork(replace(TINY, seed=1), "oil")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.encoder[0].weight, other.encoder[0].weight)
    torch.manual_seed(123)  # the global RNG does not enter
    assert torch.equal(StyleNetwork(TINY, "oil").encoder[0].weight, first.encoder[0].weight)
    assert torch.equal(first(images), images)  # last conv starts at zero: a residual of 0
    assert torch.equal(_perturbed(first)(images), _perturbed(again)(images))


def test_shared_losses_are_per_image_and_match_the_optimisation_path():
    net = RandomFeatureNet(LOSS.feature_channels, seed=0)
    generator = torch.Generator().manual_seed(2)
    style, images = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1, torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1
    targets = StyleTargets.of(net, style, centred=True)
    batch = gram_loss(net(images), targets)
    assert batch.shape == (3,)
    for i in range(3):  # one image's figure alone equals its entry in the batch
        assert torch.allclose(gram_loss(net(images[i:i + 1]), targets), batch[i:i + 1], rtol=1e-5)
        assert torch.allclose(tv_loss(images[i:i + 1]), tv_loss(images)[i:i + 1])
    assert float(gram_loss(net(style), targets)) == pytest.approx(0.0, abs=1e-6)
    # StyleLoss (the optimisation path) is these functions on a batch of one.
    single = StyleLoss(net, style, images[:1], LOSS)
    assert float(single.gram_loss(net(images[:1]))) == pytest.approx(float(batch[0]), rel=1e-5)
    content = [net(images)[i] for i in LOSS.content_layers]
    assert torch.allclose(content_loss(net(images), content, LOSS.content_layers), torch.zeros(3), atol=1e-7)
    assert float(single.content_loss(net(images[1:2]))) > 0.0


def test_a_few_steps_lower_the_objective_and_repeat_exactly():
    faces = coloured_faces(smooth_images(6), stripes(), LOSS)
    logs = []
    network = StyleNetwork(TINY, "oil")
    report = train_style_network(network, faces, stripes(), TINY, LOSS, torch.device("cpu"), logs.append)
    assert report.steps == 30 and report.stopped_by == "steps" and [log.step for log in logs] == [10, 20, 30]
    assert logs[-1].gram_loss < 0.8 * logs[0].gram_loss
    again = StyleNetwork(TINY, "oil")
    train_style_network(again, faces, stripes(), TINY, LOSS, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))
    # The trained network lowers the Gram loss of a face it did not see; the untrained one leaves it.
    unseen = smooth_images(1, seed=5)[0]
    trained = stylise_with_network(unseen, stripes(), network, LOSS)
    untrained = stylise_with_network(unseen, stripes(), StyleNetwork(TINY, "oil"), LOSS)
    assert untrained.gram_loss_after == pytest.approx(untrained.gram_loss_before, rel=0.05)
    assert trained.gram_loss_after < 0.8 * trained.gram_loss_before
    assert trained.image.shape == unseen.shape and trained.image.dtype == np.uint8


def test_a_time_cap_stops_training_short():
    capped = replace(TINY, steps=10_000, max_seconds=0.5)
    report = train_style_network(StyleNetwork(capped, "oil"), coloured_faces(smooth_images(2), stripes(), LOSS),
                                 stripes(), capped, LOSS, torch.device("cpu"))
    assert report.stopped_by == "time" and report.steps < 10_000


def test_network_config_and_its_presets():
    assert set(STYLE_PRESET_NAMES) == set(STYLE_PRESETS)
    for bad in ({"presets": ("cubism",)}, {"size": 30}, {"patch": 256}, {"patch": 30}, {"channels": (4, 8)},
                {"batch_size": 0}, {"learning_rate": 0.0}, {"gate_gram_ratio": 0.0}, {"held_out": 0}):
        with pytest.raises(ValueError):
            StyleNetworkConfig(**bad)
    assert StyleNetworkConfig(presets=["oil"]).presets == ("oil",)  # a list from JSON becomes a tuple
    assert StyleNetworkConfig(presets=[]).presets == ()  # train no style network

