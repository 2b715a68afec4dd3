"""The one sampling loop, and the wrappers that make a network a ``model_fn``.

``model_fn(x, t, i) -> model_output`` is any callable on numpy latents; classifier-free guidance,
dynamic guidance and per-frame guidance are wrappers around the network call (k-diffusion's way),
not branches inside the loop. The step comes from a ``toolkit.samplers.Sampler``: a pure function
of (model_output, x, i, state, noise) whose carried state is passed in and returned.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from toolkit.guidance import cfg_combine


def randn(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard-normal float32 noise from the run's generator (float64 draws, cast: the same bytes on
    every backend and numpy version, so a PyTorch reference can be fed the same noise)."""
    return rng.standard_normal(tuple(shape)).astype(np.float32)


@dataclass(frozen=True)
class StepRecord:
    """What the callback receives after each step."""
    i: int
    num_steps: int
    t: float
    guidance_scale: float
    seconds: float
    latents_std: float


def classifier_free_guidance(net: Callable, cond, uncond, scale_fn: Callable[[int, float], float],
                             frame_axis: int | None = None, batched: bool = True) -> Callable:
    """Wrap ``net(x, t, cond) -> out`` into ``model_fn(x, t, i)``.

    With ``uncond`` None (guidance off) the network runs once on the conditional batch. Otherwise the
    unconditional and conditional batches run together (uncond first, as diffusers orders them) -- or, with
    ``batched`` False, one after the other, which holds the activations of half the batch -- and are
    combined with the scale ``scale_fn(i, t)`` — a float, or per-frame values along ``frame_axis``.
    The last scale used is exposed as ``model_fn.last_scale`` for the step record.
    """
    def model_fn(x, t, i):
        if uncond is None:
            model_fn.last_scale = 1.0
            return net(x, t, cond)
        if batched:
            out_uncond, out_cond = np.split(net(np.concatenate([x, x]), t, _cat(uncond, cond)), 2)
        else:
            out_uncond, out_cond = net(x, t, uncond), net(x, t, cond)
        scale = scale_fn(i, t)
        model_fn.last_scale = float(np.max(scale))
        return cfg_combine(out_cond, out_uncond, scale, frame_axis=frame_axis)

    model_fn.last_scale = 1.0
    return model_fn


def _cat(a, b):
    if isinstance(a, dict):
        return {k: _cat(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        return type(a)(_cat(x, y) for x, y in zip(a, b))
    return np.concatenate([a, b])


def sample(model_fn: Callable, x: np.ndarray, sampler, *, rng: Optional[np.random.Generator] = None,
           callback: Optional[Callable[[StepRecord], None]] = None, progress: bool = True) -> np.ndarray:
    """Run ``sampler`` from latents ``x`` (already scaled by ``init_noise_sigma``) to the clean sample.

    A stochastic sampler draws its per-step noise from ``rng`` (required then), in step order.
    """
    if sampler.needs_noise and rng is None:
        raise ValueError(f"sampler {sampler.name!r} draws noise at every step: pass rng")
    steps = sampler.timesteps
    n = len(steps)
    bar = _progress(n, progress)
    state = None
    try:
        for i, t in enumerate(steps):
            start = time.perf_counter()
            out = model_fn(sampler.scale_model_input(x, i), t, i)
            noise = randn(rng, x.shape) if sampler.needs_noise else None
            x, state = sampler.step(out, x, i, state, noise)
            x = x.astype(np.float32, copy=False)
            if callback is not None:
                callback(StepRecord(i=i, num_steps=n, t=float(t),
                                    guidance_scale=float(getattr(model_fn, "last_scale", 1.0)),
                                    seconds=time.perf_counter() - start, latents_std=float(x.std())))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return x


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="denoising", leave=True, dynamic_ncols=True)  # a finished bar keeps its own line
