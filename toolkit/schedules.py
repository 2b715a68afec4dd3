"""Noise-schedule tables for discrete-time VP diffusion (DDPM / DDIM / CogVideoX), as immutable numpy arrays.

Convention: a training timestep ``t`` in ``[0, num_train_timesteps)`` has ``alpha_bar_t = alphas_cumprod[t]`` and
``x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps``. The value past the end of the table (used by the
last sampling step, which lands on clean data) is ``final_alpha_cumprod``: 1 with ``set_alpha_to_one``,
otherwise ``alphas_cumprod[0]``.

The numbers are diffusers' numbers to the last bit: diffusers builds these tables in torch, in float32 except for
CogVideoX's ``scaled_linear`` betas (float64), so each function takes a ``dtype`` and reproduces torch's CPU
arithmetic where it differs from numpy's (``torch.linspace``'s two-sided fused multiply-add, ``torch.cumprod``'s
float64 accumulator). Tables keep the dtype diffusers computes in, so that the step functions, which do their
scalar arithmetic in the table's dtype, round exactly as diffusers' schedulers do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def torch_linspace(start: float, end: float, steps: int, dtype=np.float32) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=dtype)`` on CPU, bit for bit.

    torch computes ``step = (end - start) / (steps - 1)`` in ``dtype`` and fills the first half as
    ``start + step * i`` and the second half as ``end - step * (steps - 1 - i)``, each with one rounding
    (the compiler fuses the multiply-add). ``numpy.linspace`` differs in the last bit for about a third
    of the entries, which compounds through the cumulative product of a beta schedule.
    """
    dtype = np.dtype(dtype).type
    if steps == 1:
        return np.array([start], dtype=dtype)
    s, e = dtype(start), dtype(end)
    step = (e - s) / dtype(steps - 1)
    fs, fe, fstep = Fraction(float(s)), Fraction(float(e)), Fraction(float(step))
    half = steps // 2
    exact = [fs + fstep * i if i < half else fe - fstep * (steps - 1 - i) for i in range(steps)]
    # Fraction -> float is correctly rounded to float64. For float32 this rounds twice (to float64, then to
    # float32), which can differ from a single fused rounding only when the exact value lies within 2^-53 of a
    # float32 rounding boundary; the tests compare with torch bit for bit.
    return np.array([float(v) for v in exact], dtype=np.float64).astype(dtype)


# ----------------------------------------------------------------------------------------------- betas
def linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int, dtype=np.float32) -> np.ndarray:
    """Ho et al. 2020 (DDPM), Sec. 4: betas linear in t."""
    return torch_linspace(beta_start, beta_end, num_train_timesteps, dtype)


def scaled_linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int, dtype=np.float32) -> np.ndarray:
    """Latent diffusion (Rombach et al. 2022): sqrt(beta) linear in t. diffusers' DDIMScheduler builds it in
    float32, the CogVideoX schedulers in float64."""
    root = torch_linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype)
    return root * root


def squaredcos_cap_v2_betas(num_train_timesteps: int, max_beta: float = 0.999, dtype=np.float32) -> np.ndarray:
    """Nichol & Dhariwal 2021 (improved DDPM), Eq. 17: cosine alpha_bar with s=0.008, betas capped at max_beta."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return np.array(betas, dtype=np.float64).astype(dtype)


BETA_SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "linear": lambda start, end, n, dtype: linear_betas(start, end, n, dtype),
    "scaled_linear": lambda start, end, n, dtype: scaled_linear_betas(start, end, n, dtype),
    "squaredcos_cap_v2": lambda start, end, n, dtype: squaredcos_cap_v2_betas(n),  # always float32 in diffusers
}


def make_betas(beta_schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int,
               dtype=np.float32) -> np.ndarray:
    """Betas of a named schedule (see ``BETA_SCHEDULES``)."""
    if beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule={beta_schedule!r} is not known; choose one of {sorted(BETA_SCHEDULES)}")
    return BETA_SCHEDULES[beta_schedule](beta_start, beta_end, num_train_timesteps, dtype)


# ---------------------------------------------------------------------------------------- alpha_bar
def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), accumulated in float64 and rounded to ``betas.dtype`` per entry
    (what ``torch.cumprod`` does on CPU)."""
    betas = np.asarray(betas)
    alphas = (betas.dtype.type(1.0) - betas).astype(betas.dtype)
    return np.cumprod(alphas.astype(np.float64)).astype(betas.dtype)


def _rescale_sqrt_alpha_bar(alpha_bar: np.ndarray) -> np.ndarray:
    # Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.
    root = np.sqrt(alpha_bar)
    root_0, root_T = root[0], root[-1]
    root = root - root_T                          # shift so the last timestep is zero
    root = root * (root_0 / (root_0 - root_T))    # scale so the first timestep keeps its value
    return root * root


def rescale_zero_terminal_snr_alphas_cumprod(alphas_cumprod_: np.ndarray) -> np.ndarray:
    """Lin et al. 2024, Algorithm 1, applied to alpha_bar directly (CogVideoX schedulers): alpha_bar_T becomes 0."""
    return _rescale_sqrt_alpha_bar(np.asarray(alphas_cumprod_))


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024, Algorithm 1 (DDIMScheduler's ``rescale_betas_zero_snr``): betas whose alpha_bar_T is 0."""
    betas = np.asarray(betas)
    alpha_bar = _rescale_sqrt_alpha_bar(alphas_cumprod(betas))
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])  # undo the cumulative product
    return (betas.dtype.type(1.0) - alphas).astype(betas.dtype)


def shift_snr(alphas_cumprod_: np.ndarray, snr_shift_scale: float) -> np.ndarray:
    """CogVideoX's SNR shift (as in SD3, Esser et al. 2024, Sec. 5.3.2): SNR divided by ``snr_shift_scale``,
    i.e. ``alpha_bar / (s + (1 - s) * alpha_bar)``."""
    a = np.asarray(alphas_cumprod_)
    return a / (snr_shift_scale + (1 - snr_shift_scale) * a)


def final_alpha_cumprod(alphas_cumprod_: np.ndarray, set_alpha_to_one: bool):
    """alpha_bar past the end of the table: 1 (clean data) or, without ``set_alpha_to_one``, alpha_bar_0."""
    a = np.asarray(alphas_cumprod_)
    return a.dtype.type(1.0) if set_alpha_to_one else a[0]


# --------------------------------------------------------------------------------------- timesteps
def inference_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000, timestep_spacing: str = "leading",
                        steps_offset: int = 0) -> np.ndarray:
    """Model timesteps of a sampling run, descending (DDIMScheduler.set_timesteps / the CogVideoX schedulers').

    Spacings per Lin et al. 2024, Table 2: "leading" ``arange(n) * (T // n)`` reversed, plus ``steps_offset``;
    "trailing" ``round(arange(T, 0, -T / n)) - 1``; "linspace" ``round(linspace(0, T - 1, n))`` reversed.
    As in diffusers, ``steps_offset`` only applies to "leading".
    """
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing={timestep_spacing!r} is not known; choose one of {list(TIMESTEP_SPACINGS)}")
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps={num_inference_steps} must be between 1 and "
                         f"num_train_timesteps={num_train_timesteps}")
    n, T = num_inference_steps, num_train_timesteps
    if timestep_spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    elif timestep_spacing == "leading":
        ts = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + steps_offset
    else:
        ts = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    return _frozen(ts)


# --------------------------------------------------------------------------------------------- table
@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """An immutable alpha_bar table. ``alphas_cumprod[t]`` for t in [0, T); ``final_alpha_cumprod`` for t < 0."""

    betas: np.ndarray
    alphas_cumprod: np.ndarray
    final_alpha_cumprod: np.floating

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha_bar(self, t: int):
        """alpha_bar at model timestep ``t``; the terminal value for ``t < 0`` (diffusers' ``prev_timestep < 0``)."""
        return self.alphas_cumprod[int(t)] if t >= 0 else self.final_alpha_cumprod


def _betas_for(beta_schedule, beta_start, beta_end, num_train_timesteps, trained_betas, scaled_linear_dtype):
    if trained_betas is not None:
        return np.asarray(trained_betas, dtype=np.float64).astype(np.float32)
    dtype = scaled_linear_dtype if beta_schedule == "scaled_linear" else np.float32
    return make_betas(beta_schedule, beta_start, beta_end, num_train_timesteps, dtype)


def ddim_noise_schedule(num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                        beta_schedule: str = "linear", trained_betas=None, rescale_betas_zero_snr: bool = False,
                        set_alpha_to_one: bool = True) -> NoiseSchedule:
    """The table of diffusers' DDIMScheduler (float32 throughout; zero-SNR rescaling acts on the betas)."""
    betas = _betas_for(beta_schedule, beta_start, beta_end, num_train_timesteps, trained_betas, np.float32)
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    acp = alphas_cumprod(betas)
    return NoiseSchedule(_frozen(betas), _frozen(acp), final_alpha_cumprod(acp, set_alpha_to_one))


def cogvideox_noise_schedule(num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                             beta_schedule: str = "scaled_linear", trained_betas=None,
                             rescale_betas_zero_snr: bool = False, set_alpha_to_one: bool = True,
                             snr_shift_scale: float = 3.0) -> NoiseSchedule:
    """The table of diffusers' CogVideoXDDIMScheduler / CogVideoXDPMScheduler: alpha_bar of the betas, SNR-shifted
    by ``snr_shift_scale``, then (optionally) rescaled to zero terminal SNR. ``scaled_linear`` is float64 there."""
    betas = _betas_for(beta_schedule, beta_start, beta_end, num_train_timesteps, trained_betas, np.float64)
    acp = shift_snr(alphas_cumprod(betas), snr_shift_scale)
    if rescale_betas_zero_snr:
        acp = rescale_zero_terminal_snr_alphas_cumprod(acp)
    return NoiseSchedule(_frozen(betas), _frozen(acp), final_alpha_cumprod(acp, set_alpha_to_one))
