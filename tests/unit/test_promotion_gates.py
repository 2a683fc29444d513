"""Promotion gates on real faces: each passes what a good model would give and refuses the
baselines (the mean face, copies of training faces, bicubic, a time-capped run)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.quality.gates import (face_rate_gate, failed_gates, frechet_gate, mean_face_frechet, memorisation_gate,
                                 psnr_gate, sample_nn_distances, spread_gate, style_gram_gate, style_landmark_gate,
                                 training_length_gate, training_nn_distances)
from tasks.quality.metrics import (detect_landmarks, identity_spread, landmark_frechet, normalised_shape,
                                   reference_spread)
from tests.conftest import SAMPLES

FACES = SAMPLES.parent / "faces128"


@pytest.fixture(scope="module")
def faces():
    """260 faces128 crops at 32² (the small GAN's size) and 128²: 200 for training, 60 held out."""
    if not FACES.is_dir():
        pytest.skip("shared faces128 is not available")
    paths = sorted(FACES.glob("*.jpg"))
    picked = np.random.default_rng(0).choice(len(paths), 260, replace=False)
    images = [Image.open(paths[i]).convert("RGB") for i in picked]
    small = np.stack([np.asarray(image.resize((32, 32), Image.BILINEAR)) for image in images])
    large = np.stack([np.asarray(image.resize((128, 128), Image.BILINEAR)) for image in images])
    return {"train": small[:200], "held": small[200:], "train_128": large[:200], "held_128": large[200:]}


def test_training_length_gate_refuses_a_run_the_time_cap_cut_short():
    assert training_length_gate(1825, 1825).passed
    capped = training_length_gate(195, 1825)
    assert not capped.passed and "195 of 1825" in capped.reason and "time cap" in capped.reason


def test_face_rate_gate_needs_ninety_percent():
    assert face_rate_gate(0.92, 0.9).passed and face_rate_gate(0.9, 0.9).passed
    assert not face_rate_gate(0.89, 0.9).passed and not face_rate_gate(0.0, 0.9).passed


def test_frechet_gate_passes_real_faces_and_refuses_the_mean_face(faces):
    reference = np.stack([normalised_shape(p) for p in detect_landmarks(faces["train_128"]) if p is not None])
    baseline, found = mean_face_frechet(faces["train"], reference)
    assert found and 500 < baseline < 5000  # about 1,900 on faces128 at 32²
    held = [p for p in detect_landmarks(faces["held"]) if p is not None]
    real = landmark_frechet(np.stack([normalised_shape(p) for p in held]), reference)
    assert frechet_gate(real, baseline).passed, (real, baseline)
    # A generator that always draws the mean face scores the baseline itself: not below it.
    assert not frechet_gate(baseline, baseline).passed
    assert not frechet_gate(float("nan"), baseline).passed  # fewer than 2 samples with a face


def _shapes(images):
    return np.stack([normalised_shape(p) for p in detect_landmarks(images) if p is not None])


def test_spread_gate_passes_new_faces_and_refuses_the_mean_face_and_a_collapsed_generator(faces):
    reference = _shapes(faces["train_128"])
    held = _shapes(faces["held"])
    baseline = reference_spread(reference, len(held))
    assert 0.3 < baseline < 3.0  # RMS pixels of the 128² aligned crop; about 0.8 for 60 faces
    assert spread_gate(identity_spread(held), baseline).passed
    # The mean training face in jittered colours with pixel noise (what a GAN that learnt only the
    # mean draws), and three faces drawn twenty times each (mode collapse).
    rng = np.random.default_rng(2)
    mean = faces["train"].astype(np.float64).mean(axis=0)
    jittered = np.clip(mean[None] * rng.uniform(0.8, 1.2, (60, 1, 1, 3)) + rng.normal(0, 3, (60, 32, 32, 3)), 0, 255)
    mean_spread = identity_spread(_shapes(jittered.astype(np.uint8)))
    collapsed = identity_spread(_shapes(np.concatenate([faces["held"][:3]] * 20)))
    assert not spread_gate(mean_spread, baseline).passed, (mean_spread, baseline)
    assert not spread_gate(collapsed, baseline).passed and collapsed < 0.01
    assert not spread_gate(float("nan"), baseline).passed  # fewer than 2 samples with a face
    assert np.isnan(identity_spread(held[:1]))


def test_memorisation_gate_passes_new_faces_and_refuses_copies_and_the_mean_face(faces):
    train, held = faces["train"], faces["held"]
    training_nn = training_nn_distances(train)
    assert training_nn.shape == (200,) and training_nn.min() > 5  # no face matched itself or its mirror
    assert memorisation_gate(sample_nn_distances(held, train), training_nn).passed
    noise = np.random.default_rng(1).integers(-3, 4, (60, 32, 32, 3))
    copies = np.clip(train[:60].astype(int) + noise, 0, 255).astype(np.uint8)
    mirrored = np.ascontiguousarray(train[60:120, :, ::-1])
    for name, samples in (("copies", copies), ("mirrored copies", mirrored)):
        verdict = memorisation_gate(sample_nn_distances(samples, train), training_nn)
        assert not verdict.passed and "100% of samples" in verdict.reason, name
    # Half copies, half new faces: the median alone would pass, the near-copy share does not.
    mixed = np.concatenate([copies[:30], held[:30]])
    assert not memorisation_gate(sample_nn_distances(mixed, train), training_nn).passed
    mean = np.repeat(train.mean(axis=0, keepdims=True).round().astype(np.uint8), 8, axis=0)
    assert not memorisation_gate(sample_nn_distances(mean, train), training_nn).passed


def test_psnr_gate_needs_to_beat_bicubic():
    assert psnr_gate(28.4, 27.9).passed
    refused = psnr_gate(25.1, 27.9)
    assert not refused.passed and "25.10 dB ≤ bicubic 27.90 dB" in refused.reason
    assert not psnr_gate(27.9, 27.9).passed
    assert [g.gate for g in failed_gates([psnr_gate(25.1, 27.9), training_length_gate(5, 5)])] == ["sr_psnr"]


def test_style_gates_compare_with_the_optimisation_path():
    assert style_gram_gate(0.3, 0.2).passed and style_gram_gate(0.4, 0.2).passed
    refused = style_gram_gate(0.41, 0.2)
    assert not refused.passed and refused.threshold == pytest.approx(0.4) and "optimisation" in refused.reason
    assert not style_gram_gate(float("nan"), 0.2).passed
    assert style_landmark_gate(0.02, 0.03).passed and style_landmark_gate(0.03, 0.03).passed
    assert not style_landmark_gate(0.031, 0.03).passed and style_landmark_gate(0.031, 0.03, tolerance=0.002).passed
    assert not style_landmark_gate(float("inf"), 0.03).passed  # a face lost
    assert not style_landmark_gate(float("nan"), float("nan")).passed  # no face to judge by
