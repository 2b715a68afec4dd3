"""What every family's assembly module shares: checking a request before anything loads, initial
latents, timing, and turning decoded video into frames."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from toolkit.sampling import randn


class RequestError(ValueError):
    """A request key has a value the model cannot take; raised before any weights load."""


def fail(key: str, value: Any, why: str, allowed: str | Iterable | None = None):
    msg = f"{key}={value!r}: {why}"
    if allowed is not None:
        msg += f" (allowed: {allowed if isinstance(allowed, str) else ', '.join(map(str, allowed))})"
    raise RequestError(msg)


def check_choice(key: str, value, allowed: Iterable):
    allowed = list(allowed)
    if value not in allowed:
        fail(key, value, "unknown value", allowed)


def check_int(key: str, value, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(key, value, "must be an integer")
    if minimum is not None and value < minimum:
        fail(key, value, f"must be >= {minimum}")
    return int(value)


def check_number(key: str, value, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        fail(key, value, "must be a number")
    if minimum is not None and value < minimum:
        fail(key, value, f"must be >= {minimum}")
    return float(value)


def check_multiple(key: str, value, multiple: int, why: str) -> int:
    value = check_int(key, value, 1)
    if value % multiple:
        lo = value - value % multiple
        near = [n for n in (lo, lo + multiple) if n > 0]
        fail(key, value, f"must be divisible by {multiple} ({why}); nearest allowed: {near}")
    return value


def as_prompt_list(key: str, prompt) -> list[str] | None:
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    fail(key, prompt, "must be a string or a list of strings")


def read_model_index(folder, components, family: str) -> dict:
    """model_index.json of a diffusers pipeline folder, checked to name every component the family loads."""
    from toolkit import loading

    index = loading.read_json(Path(folder) / "model_index.json")
    missing = [c for c in components if c not in index]
    if missing:
        raise loading.CheckpointError(f"{folder}/model_index.json lacks components {missing}; "
                                      f"this is not a {family} checkpoint")
    return index


def check_prompts(r: dict, embed_dim: int) -> int:
    """``prompt`` xor ``prompt_embeds`` (a .npy (batch, seq, embed_dim)), a ``negative_prompt`` of one
    entry or one per prompt, ``negative_prompt_embeds`` shaped like ``prompt_embeds``. Returns the
    number of prompts."""
    prompts = as_prompt_list("prompt", r.get("prompt"))
    if prompts is not None and r.get("prompt_embeds") is not None:
        fail("prompt_embeds", r["prompt_embeds"], "given together with prompt; set prompt=null to use embeddings")
    if prompts is None and r.get("prompt_embeds") is None:
        fail("prompt", None, "give a prompt (or prompt_embeds=<file.npy>)")
    negs = as_prompt_list("negative_prompt", r.get("negative_prompt"))
    if prompts is not None and negs is not None and len(negs) not in (1, len(prompts)):
        fail("negative_prompt", r["negative_prompt"],
             f"has {len(negs)} entries but prompt has {len(prompts)}", "one string, or one per prompt")
    if prompts is not None:
        return len(prompts)
    embeds = load_array("prompt_embeds", r["prompt_embeds"])
    if embeds.ndim != 3 or embeds.shape[-1] != embed_dim:
        fail("prompt_embeds", r["prompt_embeds"], f"shape {embeds.shape}, expected (batch, seq, {embed_dim})")
    if r.get("negative_prompt_embeds") is not None:
        load_array("negative_prompt_embeds", r["negative_prompt_embeds"], embeds.shape)
    return embeds.shape[0]


def load_array(key: str, path, shape: tuple | None = None, dtype=np.float32) -> np.ndarray:
    """A .npy given on the command line, checked for shape and dtype before any model loads."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        fail(key, str(path), "no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:
        fail(key, str(path), f"not a readable .npy file ({e})")
    if arr.dtype != dtype:
        fail(key, str(path), f"dtype {arr.dtype}, expected {np.dtype(dtype).name}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        fail(key, str(path), f"shape {tuple(arr.shape)}, expected {tuple(shape)}")
    return arr


def initial_latents(shape: tuple, latents: np.ndarray | None, rng: np.random.Generator,
                    init_noise_sigma: float) -> np.ndarray:
    """The given latents, or noise drawn from the run's generator; scaled by the sampler's init sigma."""
    x = latents if latents is not None else randn(rng, shape)
    return (x * np.float32(init_noise_sigma)).astype(np.float32)


def video_to_frames(video: np.ndarray) -> np.ndarray:
    """Decoded video (B, C, F, H, W) in [-1, 1] -> frames (B, F, H, W, 3) float32 in [0, 1], as
    diffusers' VideoProcessor.postprocess_video(output_type="np")."""
    return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1).astype(np.float32)


class Timer:
    """Seconds per named stage, accumulated: ``with timer("decode"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def steps_for_strength(num_inference_steps: int, strength: float) -> int:
    """How many of the schedule's last steps an input noised to ``strength`` is denoised with: diffusers'
    ``get_timesteps``, ``min(int(num_inference_steps * strength), num_inference_steps)`` (0 for strength 0)."""
    return min(int(num_inference_steps * strength), num_inference_steps)


def sampler_from_strength(sampler, strength: float):
    """The sampler restricted to its last ``steps_for_strength`` steps (video-to-video, SDEdit-style).

    Step i of the result is step ``start + i`` of the full schedule; ``prev_timesteps`` are sliced alongside,
    so each step still moves to the same next noise level as in the full schedule, and ``add_noise(x0, eps, 0)``
    noises to the first kept timestep."""
    import dataclasses

    n = sampler.num_steps
    start = n - steps_for_strength(n, strength)
    return dataclasses.replace(sampler, timesteps=sampler.timesteps[start:],
                               prev_timesteps=sampler.prev_timesteps[start:])
