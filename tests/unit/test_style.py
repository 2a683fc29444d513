"""Style stage compute on tiny images: Lab conversion, colour transfer, random features, stylise."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.style.colour import lab_to_rgb_u8, rgb_to_lab, transfer_colour
from tasks.style.config import StyleConfig
from tasks.style.features import RandomFeatureNet, gram_matrix
from tasks.style.presets import PRESET_DIR, STYLE_PRESETS, resolve_style
from tasks.style.transfer import stylise

TINY = StyleConfig(size=32, steps=8, feature_channels=(8, 16, 16), device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_image(seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y) + rng.uniform(0, 6))
                for _ in range(3)]
    return ((np.stack(channels, axis=-1) * 0.35 + 0.5) * 255).astype(np.uint8)


def stripes(size: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    on = ((x + y) // 3) % 2 == 0
    return np.where(on[..., None], (200, 60, 30), (30, 40, 120)).astype(np.uint8)


def test_lab_round_trip_and_reference_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.abs(lab_to_rgb_u8(rgb_to_lab(image)).astype(int) - image).max() <= 1
    lab = rgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], (100.0, 0.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(lab[1], (0.0, 0.0, 0.0), atol=1e-6)
    # sRGB red under D65 (CIE reference value).
    np.testing.assert_allclose(lab[2], (53.24, 80.09, 67.20), atol=0.02)
    np.testing.assert_allclose(rgb_to_lab(image.astype(np.float64) / 255.0), rgb_to_lab(image))


def test_colour_transfer_moves_lab_statistics_toward_the_style():
    content, style = smooth_image(1), stripes()
    content_mean = rgb_to_lab(content).mean(axis=(0, 1))
    style_mean = rgb_to_lab(style).mean(axis=(0, 1))
    full = rgb_to_lab(transfer_colour(content, style, 1.0)).mean(axis=(0, 1))
    half = rgb_to_lab(transfer_colour(content, style, 0.5)).mean(axis=(0, 1))
    assert np.linalg.norm(full - style_mean) < 0.25 * np.linalg.norm(content_mean - style_mean)
    assert np.linalg.norm(full - style_mean) < np.linalg.norm(half - style_mean) < np.linalg.norm(content_mean - style_mean)
    assert np.array_equal(transfer_colour(content, style, 0.0), content)
    with pytest.raises(ValueError):
        transfer_colour(content, style, 1.5)


def test_feature_net_is_fixed_by_its_seed():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    first = RandomFeatureNet((8, 16, 32), seed=3)(images)
    again = RandomFeatureNet((8, 16, 32), seed=3)(images)
    other = RandomFeatureNet((8, 16, 32), seed=4)(images)
    assert [f.shape for f in first] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.allclose(first[0], other[0])
    assert not any(p.requires_grad for p in RandomFeatureNet((8,), seed=0).parameters())


def test_gram_matrix_shape_symmetry_and_normalisation():
    features = torch.randn(2, 5, 6, 7, generator=torch.Generator().manual_seed(1))
    gram = gram_matrix(features)
    assert gram.shape == (2, 5, 5)
    assert torch.allclose(gram, gram.transpose(1, 2))
    assert torch.allclose(gram[1, 2, 3], (features[1, 2] * features[1, 3]).sum() / (5 * 6 * 7))
    assert torch.all(torch.linalg.eigvalsh(gram) > -1e-6)
    # Centring removes a constant offset per channel.
    assert torch.allclose(gram_matrix(features, centred=True), gram_matrix(features + 3.0, centred=True), atol=1e-5)


def test_stylise_reduces_the_gram_loss_and_is_deterministic():
    content, style = smooth_image(2), stripes()
    result = stylise(content, style, TINY, seed=5)
    assert result.image.shape == content.shape and result.image.dtype == np.uint8
    assert result.gram_loss_after < 0.8 * result.gram_loss_before
    again = stylise(content, style, TINY, seed=5)
    assert np.array_equal(result.image, again.image)
    assert result.gram_loss_after == again.gram_loss_after
    other = stylise(content, style, TINY, seed=6)
    assert not np.array_equal(result.image, other.image)
    untouched = stylise(content, style, replace(TINY, steps=0, init_noise=0.0, colour_strength=0.0), seed=5)
    assert np.array_equal(untouched.image, content)


def test_stylise_brings_the_result_back_to_the_input_size():
    content = np.asarray(Image.fromarray(smooth_image(3, 48)).resize((64, 48)))
    for preserve in (True, False):
        result = stylise(content, stripes(), replace(TINY, preserve_detail=preserve, steps=2), seed=0)
        assert result.image.shape == (48, 64, 3)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        StyleConfig(colour_strength=1.5)
    with pytest.raises(ValueError):
        StyleConfig(content_layers=(3,))
    with pytest.raises(ValueError):
        StyleConfig(learning_rate=0.0)
    with pytest.raises(ValueError):
        StyleConfig(device="tpu")


def test_resolve_style_presets_paths_and_unknown_names(tmp_path):
    assert len(STYLE_PRESETS) >= 3
    for name, filename in STYLE_PRESETS.items():
        assert (PRESET_DIR / filename).stat().st_size < 60_000
        resolved, image = resolve_style(name)
        assert resolved == name and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert image.std() > 10.0
    Image.fromarray(stripes()).save(tmp_path / "mine.png")
    path, image = resolve_style("mine.png", manifest_dir=tmp_path)
    assert path == str(tmp_path / "mine.png") and np.array_equal(image, stripes())
    with pytest.raises(ValueError, match="unknown style 'cubism'"):
        resolve_style("cubism", manifest_dir=tmp_path)


def test_shipped_presets_are_what_the_generator_makes():
    from tasks.style import presets
    for name, filename in STYLE_PRESETS.items():
        made = getattr(presets, f"make_{name}")()
        assert np.array_equal(made, resolve_style(name)[1]), name
