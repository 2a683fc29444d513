"""sRGB ↔ CIE Lab (D65) conversion and Reinhard colour transfer in Lab space."""

from __future__ import annotations

import numpy as np

# sRGB primaries with the D65 white point (IEC 61966-2-1).
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_D65_WHITE = _RGB_TO_XYZ.sum(axis=1)
_EPSILON = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


def _linearise(unit: np.ndarray) -> np.ndarray:
    return np.where(unit <= 0.04045, unit / 12.92, ((unit + 0.055) / 1.055) ** 2.4)


# uint8 input has 256 values: its linearisation is a table lookup, not a power per pixel.
_U8_TO_LINEAR = _linearise(np.arange(256, dtype=np.float64) / 255.0)


def _linear_rgb(rgb: np.ndarray) -> np.ndarray:
    array = np.asarray(rgb)
    if array.shape[-1:] != (3,):
        raise ValueError(f"expected RGB values in the last axis, got shape {array.shape}")
    if array.dtype == np.uint8:
        return _U8_TO_LINEAR[array]
    return _linearise(array.astype(np.float64))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 0..255, or float 0..1) → Lab float64 (L 0..100, a and b about −128..127)."""
    linear = _linear_rgb(rgb)
    xyz = linear @ (_RGB_TO_XYZ.T / _D65_WHITE)
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), (_KAPPA * xyz + 16.0) / 116.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab → sRGB float64 in 0..1 (out-of-gamut colours are clipped)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    f = np.stack([fx, fy, fz], axis=-1)
    cubed = f * f * f
    xyz = np.where(cubed > _EPSILON, cubed, (116.0 * f - 16.0) / _KAPPA)
    # L ≤ 8 lies on the linear segment for Y: use L directly for an exact inverse there.
    xyz[..., 1] = np.where(lab[..., 0] > _KAPPA * _EPSILON, cubed[..., 1], lab[..., 0] / _KAPPA)
    linear = np.clip(xyz @ (_D65_WHITE[:, None] * _XYZ_TO_RGB.T), 0.0, 1.0)
    unit = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1.0 / 2.4) - 0.055)
    return np.clip(unit, 0.0, 1.0)


def lab_to_rgb_u8(lab: np.ndarray) -> np.ndarray:
    """Lab → sRGB uint8."""
    return np.round(lab_to_rgb(lab) * 255.0).astype(np.uint8)


def transfer_colour(content_u8: np.ndarray, style_u8: np.ndarray, strength: float) -> np.ndarray:
    """Reinhard transfer: each Lab channel of the content gets the style's mean and standard
    deviation; the result is blended with the content by ``strength`` (0 = content, 1 = full)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    for name, image in (("content", content_u8), ("style", style_u8)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be an H×W×3 uint8 image, got {image.shape} {image.dtype}")
    if strength == 0.0:
        return content_u8.copy()
    content_lab = rgb_to_lab(content_u8)
    style_lab = rgb_to_lab(style_u8)
    content_mean = content_lab.mean(axis=(0, 1))
    content_std = content_lab.std(axis=(0, 1))
    style_mean = style_lab.mean(axis=(0, 1))
    style_std = style_lab.std(axis=(0, 1))
    # A flat content channel has no spread to rescale; it only moves to the style mean.
    scale = np.where(content_std > 1e-6, style_std / np.maximum(content_std, 1e-6), 1.0)
    matched = (content_lab - content_mean) * scale + style_mean
    blended = content_lab + strength * (matched - content_lab)
    return lab_to_rgb_u8(blended)
