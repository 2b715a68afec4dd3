"""Noise-schedule tables for discrete-time VP diffusion (DDPM / DDIM / CogVideoX / LCM / PNDM) and their
EDM-style sigma form (Euler, DPM-Solver; Karras sigmas), and each scheduler's inference timesteps, as immutable
numpy arrays.

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


# ------------------------------------------------------------------------------ sigma (VE) parameterisation
# Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models", EDM), Sec. 2: a VP
# sample x_t = sqrt(a) x0 + sqrt(1 - a) eps, divided by sqrt(a), is x0 + sigma eps with sigma = sqrt((1 - a) / a).
# diffusers' Euler, Euler-ancestral and DPM-Solver multistep schedulers work on that sigma; their sigma tables are
# float32 (the training table, built in torch) or float64 (everything numpy computes from it), and are rounded to
# float32 once, after the terminal value is appended.

def sigma_noise_schedule(num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                         beta_schedule: str = "linear", trained_betas=None,
                         rescale_betas_zero_snr: bool = False) -> NoiseSchedule:
    """The alpha_bar table of diffusers' Euler / Euler-ancestral / DPM-Solver multistep schedulers (float32).

    As DDIMScheduler's, except that with zero-terminal-SNR rescaling alpha_bar_T is set to 2^-24 instead of 0,
    so that sigma_T = sqrt((1 - a) / a) stays finite (~4096)."""
    sch = ddim_noise_schedule(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas,
                              rescale_betas_zero_snr, set_alpha_to_one=True)
    if not rescale_betas_zero_snr:
        return sch
    acp = np.array(sch.alphas_cumprod)
    acp[-1] = 2.0 ** -24
    return NoiseSchedule(sch.betas, _frozen(acp), sch.final_alpha_cumprod)


def vp_sigmas(alphas_cumprod_: np.ndarray) -> np.ndarray:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) per training timestep (ascending in t), in the table's dtype."""
    a = np.asarray(alphas_cumprod_)
    return _frozen(np.sqrt((a.dtype.type(1.0) - a) / a))


def euler_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000, timestep_spacing: str = "linspace",
                    steps_offset: int = 0) -> np.ndarray:
    """Model timesteps of EulerDiscreteScheduler / EulerAncestralDiscreteScheduler, descending, float32.

    As ``inference_timesteps`` except "linspace", which is not rounded here: ``linspace(0, T - 1, n)`` in float32
    (so the network sees fractional timesteps such as 946.42)."""
    n, T = num_inference_steps, num_train_timesteps
    if timestep_spacing == "linspace":
        if not 1 <= n <= T:
            inference_timesteps(n, T, timestep_spacing)  # raises the common message
        return _frozen(np.linspace(0, T - 1, n, dtype=np.float32)[::-1])
    return _frozen(inference_timesteps(n, T, timestep_spacing, steps_offset).astype(np.float32))


def dpm_solver_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000,
                         timestep_spacing: str = "linspace", steps_offset: int = 0,
                         last_timestep: int | None = None) -> np.ndarray:
    """Model timesteps of DPMSolverMultistepScheduler (before any Karras conversion), descending, int64.

    "linspace" and "leading" lay ``n + 1`` points over ``[0, last_timestep)`` and drop the last (t = 0), so no
    step is spent at the clean end; "trailing" is ``inference_timesteps``' trailing. ``last_timestep`` (T by
    default) is T minus the timesteps cut by ``lambda_min_clipped``."""
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing={timestep_spacing!r} is not known; choose one of {list(TIMESTEP_SPACINGS)}")
    n, T = num_inference_steps, num_train_timesteps
    last = T if last_timestep is None else int(last_timestep)
    if timestep_spacing == "linspace":
        ts = np.linspace(0, last - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    elif timestep_spacing == "leading":
        ts = (np.arange(0, n + 1) * (last // (n + 1))).round()[::-1][:-1].astype(np.int64) + steps_offset
    else:
        ts = np.arange(last, 0, -T / n).round().astype(np.int64) - 1
    return _frozen(ts)


def lcm_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000,
                  original_inference_steps: int = 50) -> np.ndarray:
    """Model timesteps of LCMScheduler (Luo et al. 2023, "Latent Consistency Models"), descending, int64.

    The distillation schedule is ``k * [1..N] - 1`` (k = T // N, N = ``original_inference_steps``, a DDIM
    "skipping step" schedule); inference takes ``n`` of its points, evenly spaced from the noisy end."""
    n, T, N = num_inference_steps, num_train_timesteps, original_inference_steps
    if N > T:
        raise ValueError(f"original_inference_steps={N} must not exceed num_train_timesteps={T}")
    if not 1 <= n <= N:
        raise ValueError(f"num_inference_steps={n} must be between 1 and original_inference_steps={N} "
                         f"(LCM samples a subset of its distillation schedule)")
    origin = (np.arange(1, N + 1) * (T // N) - 1)[::-1]
    idx = np.floor(np.linspace(0, N, num=n, endpoint=False)).astype(np.int64)
    return _frozen(origin[idx].astype(np.int64))


def pndm_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000, timestep_spacing: str = "leading",
                   steps_offset: int = 0, skip_prk_steps: bool = False) -> tuple[np.ndarray, int]:
    """Model timesteps of PNDMScheduler (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models"), and how
    many of them are Runge-Kutta (PRK) evaluations.

    With ``skip_prk_steps`` (Stable Diffusion's configs) the n grid points are visited with the second one repeated:
    ``[t0, t1, t1, t2, ..., t_{n-1}]`` (n + 1 network calls; the repeat is the first step's second-order
    correction). Without it the four noisiest points are integrated with 4th-order Runge-Kutta (3 evaluations per
    point at t, t - d/2, t - d/2, t - d with d = T // n; 12 in all) and linear multistep (PLMS) takes the rest.
    """
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing={timestep_spacing!r} is not known; choose one of {list(TIMESTEP_SPACINGS)}")
    n, T = num_inference_steps, num_train_timesteps
    if timestep_spacing == "linspace":
        grid = np.linspace(0, T - 1, n).round().astype(np.int64)
    elif timestep_spacing == "leading":
        grid = (np.arange(0, n) * (T // n)).round().astype(np.int64) + steps_offset
    else:
        grid = np.round(np.arange(T, 0, -T / n))[::-1].astype(np.int64) - 1
    if skip_prk_steps:
        return _frozen(np.concatenate([grid[:-1], grid[-2:-1], grid[-1:]])[::-1].astype(np.int64)), 0
    order = 4
    if n < order:
        raise ValueError(f"num_inference_steps={n}: PNDM's Runge-Kutta start (skip_prk_steps=False) needs at least "
                         f"{order} steps; use more steps or skip_prk_steps=True")
    prk = np.array(grid[-order:]).repeat(2) + np.tile(np.array([0, T // n // 2]), order)
    prk = prk[:-1].repeat(2)[1:-1][::-1]
    plms = grid[:-3][::-1]
    return _frozen(np.concatenate([prk, plms]).astype(np.int64)), int(prk.shape[0])


def karras_sigmas(sigma_min: float, sigma_max: float, num_inference_steps: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, Eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0..n-1, descending, float64 (no terminal zero: the scheduler appends its own)."""
    ramp = np.linspace(0, 1, num_inference_steps)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each sigma: linear interpolation of log sigma in the table ``log_sigmas``
    (ascending in t), clamped to its ends (k-diffusion's ``DiscreteSchedule.sigma_to_t``, float64)."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low_idx = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    return (1 - w) * low_idx + w * high_idx
