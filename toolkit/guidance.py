"""Classifier-free guidance (Ho & Salimans 2022): combining the conditional and unconditional network outputs,
and the guidance scale as a function of the step.

Scale functions return a float (or, per frame, a float32 array); ``cfg_combine`` applies it. A scale of 1
returns the conditional output unchanged, so a loop may skip the unconditional pass then.
"""
from __future__ import annotations

import math

import numpy as np

from toolkit.schedules import torch_linspace


def _per_frame(scale: np.ndarray, ndim: int, frame_axis: int | None) -> np.ndarray:
    if frame_axis is None:
        raise ValueError("a per-frame guidance scale needs `frame_axis` (the frame axis of the outputs)")
    axis = frame_axis % ndim
    shape = [1] * ndim
    shape[axis] = scale.shape[0]
    return scale.reshape(shape)


def rescale_guidance(guided: np.ndarray, cond: np.ndarray, rescale: float) -> np.ndarray:
    """Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Sec. 3.4, Eq. 15-16:
    scale the guided output to the per-sample standard deviation of the conditional one, then mix
    ``rescale * rescaled + (1 - rescale) * guided`` (diffusers' ``rescale_noise_cfg``; std is the unbiased one
    over all axes but the first)."""
    axes = tuple(range(1, cond.ndim))
    dt = guided.dtype.type
    std_cond = np.std(cond.astype(np.float64), axis=axes, ddof=1, keepdims=True).astype(guided.dtype)
    std_guided = np.std(guided.astype(np.float64), axis=axes, ddof=1, keepdims=True).astype(guided.dtype)
    rescaled = guided * (std_cond / std_guided)
    return dt(rescale) * rescaled + dt(1 - rescale) * guided


def cfg_combine(cond: np.ndarray, uncond: np.ndarray, scale, *, rescale: float = 0.0,
                frame_axis: int | None = None) -> np.ndarray:
    """Ho & Salimans 2022 ("Classifier-Free Diffusion Guidance"), Eq. 6: ``uncond + scale * (cond - uncond)``.

    ``scale`` is a float, or a 1-D array with one scale per frame laid along ``frame_axis`` of the outputs
    (Stable Video Diffusion's per-frame guidance). ``rescale`` > 0 applies ``rescale_guidance`` (diffusers'
    ``guidance_rescale``). Computed in the outputs' dtype, as diffusers does. A scalar scale of exactly 1 returns
    ``cond`` itself (no guidance, as in diffusers, where ``guidance_scale <= 1`` skips the combination).
    """
    cond = np.asarray(cond)
    uncond = np.asarray(uncond, dtype=cond.dtype)
    if np.ndim(scale) == 0:
        if scale == 1:
            return cond
        s = cond.dtype.type(scale)
    else:
        s = _per_frame(np.asarray(scale, dtype=cond.dtype).reshape(-1), cond.ndim, frame_axis)
    guided = uncond + s * (cond - uncond)
    if rescale > 0:
        guided = rescale_guidance(guided, cond, rescale)
    return guided


def constant_guidance(scale: float, i: int, t, num_steps: int) -> float:
    """The same scale at every step (step index ``i``, model timestep ``t``, ``num_steps`` steps)."""
    return float(scale)


def cogvideox_dynamic_guidance(scale: float, t, num_inference_steps: int) -> float:
    """CogVideoX's cosine guidance schedule (diffusers' CogVideoXPipeline, ``use_dynamic_cfg=True``):

        1 + scale * (1 - cos(pi * ((n - t) / n) ** 5)) / 2.

    ``t`` is the *model timestep* (e.g. 999 ... 0), not the step index: that is what diffusers passes
    (``t.item()``), and we reproduce it, although (n - t) / n then lies far outside [0, 1].
    """
    n = num_inference_steps
    return 1 + scale * ((1 - math.cos(math.pi * ((n - float(t)) / n) ** 5.0)) / 2)


def linear_frame_guidance(min_scale: float, max_scale: float, num_frames: int) -> np.ndarray:
    """Per-frame scales rising linearly from ``min_scale`` (first frame) to ``max_scale`` (last frame), float32:
    Stable Video Diffusion (Blattmann et al. 2023), diffusers' ``torch.linspace(min, max, num_frames)``."""
    return torch_linspace(min_scale, max_scale, num_frames, np.float32)
