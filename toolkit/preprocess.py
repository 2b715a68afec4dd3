"""Conditioning images and videos into the VAE's input: resized to the requested size, scaled to [-1, 1].

This is what diffusers' ``VaeImageProcessor.preprocess`` / ``VideoProcessor.preprocess_video`` do for PIL input
with their default settings (``resize_mode="default"``, ``resample="lanczos"``, ``do_normalize=True``): every frame
is resized to exactly ``width`` x ``height`` with PIL's Lanczos filter — the aspect ratio is *not* kept and nothing
is cropped — then ``x / 255`` and ``2 x - 1`` in float32. Arrays are first turned into PIL images (uint8), so a
``.npy`` of frames goes through the same resize as an mp4 or a gif (diffusers would resize raw arrays with torch's
nearest-neighbour interpolate instead; feeding it PIL frames is what makes the two agree).

Pure numpy/PIL: no MindSpore, so a request can be checked (and its input read) before any model loads.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def resize(image, height: int, width: int):
    """A PIL image resized to ``width`` x ``height`` (Lanczos, no crop), as diffusers' ``VaeImageProcessor.resize``."""
    from PIL import Image

    return image.resize((int(width), int(height)), resample=Image.Resampling.LANCZOS, reducing_gap=None)


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (diffusers' ``pil_to_numpy`` then ``normalize``, in float32)."""
    x = np.asarray(pixels).astype(np.float32) / np.float32(255.0)
    return np.float32(2.0) * x - np.float32(1.0)


def _as_pil(frame):
    from PIL import Image

    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"a frame must be a PIL image or a uint8 (H, W, 3) array; got {frame.dtype} {frame.shape}")
    return Image.fromarray(frame)


def preprocess_image(image, height: int, width: int) -> np.ndarray:
    """One image (PIL, or uint8 (H, W, 3)) -> (3, height, width) float32 in [-1, 1]."""
    return to_unit_range(np.asarray(resize(_as_pil(image), height, width))).transpose(2, 0, 1)


def preprocess_video(frames: Iterable, height: int, width: int) -> np.ndarray:
    """Frames (uint8 (F, H, W, 3), or a list of PIL images) -> (3, F, height, width) float32 in [-1, 1]."""
    resized = [np.asarray(resize(_as_pil(f), height, width)) for f in frames]
    if not resized:
        raise ValueError("preprocess_video: no frames")
    return to_unit_range(np.stack(resized)).transpose(3, 0, 1, 2)
