"""Denoising steps as pure numpy functions, and a ``Sampler`` that binds one of them to a schedule.

Every step function reads only its arguments: the network output, the current sample, the alpha_bar values (or
sigmas) it moves between (looked up by the caller in the sampler's tables), options, and, for a stochastic step,
the noise. Multistep state (the CogVideoX DPM solver's previous x0, DPM-Solver++'s earlier data predictions,
PNDM's eps history) is passed in and returned, never kept in an object.

Registered samplers (diffusers class names): DDIMScheduler, CogVideoXDDIMScheduler, CogVideoXDPMScheduler,
EulerDiscreteScheduler (incl. Stable Video Diffusion's Karras / v-prediction / continuous-timestep setup),
EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler (dpmsolver++ / sde-dpmsolver++, orders 1-3),
LCMScheduler, PNDMScheduler (PLMS, with or without the Runge-Kutta start).

Numerics follow diffusers' schedulers, which compute in torch: the scalar coefficients are computed in the
table's dtype (float32 for most tables, float64 for CogVideoX's scaled_linear tables) and rounded to the
sample's dtype (float32) once, right where torch multiplies a 0-d tensor into a float32 tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from toolkit.schedules import (BETA_SCHEDULES, TIMESTEP_SPACINGS, NoiseSchedule, cogvideox_noise_schedule,
                               ddim_noise_schedule, dpm_solver_timesteps, euler_timesteps, inference_timesteps,
                               karras_sigmas, lcm_timesteps, pndm_timesteps, sigma_noise_schedule, sigma_to_t,
                               torch_linspace, vp_sigmas)

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def _scalar(v):
    """A numpy scalar; python floats become float64 (torch turns them into float32 0-d tensors only in diffusers'
    ``torch.tensor(1.0)``, whose value 1 is exact in either dtype)."""
    return np.asarray(v)[()]


def _like(c, x: np.ndarray):
    """Round a scalar coefficient to the sample's dtype, as torch does for ``0-d tensor * float32 tensor``."""
    return x.dtype.type(c)


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r} is not known; choose one of {list(PREDICTION_TYPES)}")


def predict_x0_and_eps(model_output: np.ndarray, sample: np.ndarray, alpha_prod_t, prediction_type: str):
    """x0 and eps from the network output, for x_t = sqrt(a) x0 + sqrt(1 - a) eps.

    "epsilon": Song et al. 2021 (DDIM) Eq. 12's x0 estimate; "sample": the output is x0; "v_prediction":
    Salimans & Ho 2022, Sec. 4 / Imagen Video (Ho et al. 2022) Sec. 2.4, v = sqrt(a) eps - sqrt(1 - a) x0.
    """
    _check_prediction_type(prediction_type)
    a = _scalar(alpha_prod_t)
    one = a.dtype.type(1.0)
    beta = one - a
    sa, sb = np.sqrt(a), np.sqrt(beta)
    with np.errstate(divide="ignore", invalid="ignore"):  # alpha_bar_T = 0 with zero-terminal-SNR tables
        if prediction_type == "epsilon":
            x0 = (sample - _like(sb, sample) * model_output) / _like(sa, sample)
            eps = model_output
        elif prediction_type == "sample":
            x0 = model_output
            eps = (sample - _like(sa, sample) * x0) / _like(sb, sample)
        else:
            x0 = _like(sa, sample) * sample - _like(sb, sample) * model_output
            eps = _like(sa, sample) * model_output + _like(sb, sample) * sample
    return x0, eps


def _torch_quantile_rows(a: np.ndarray, q: float) -> np.ndarray:
    """``torch.quantile(a, q, dim=1)`` (linear interpolation; the rank ``q * (n - 1)`` in the input's dtype)."""
    srt = np.sort(a, axis=1)
    dt = a.dtype.type
    rank = dt(q) * dt(srt.shape[1] - 1)
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    w = dt(rank - dt(lo))
    below, above = srt[:, lo].astype(np.float64), srt[:, hi].astype(np.float64)
    diff = (above - below).astype(dt).astype(np.float64)
    # torch's lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w); one rounding each
    out = below + float(w) * diff if abs(w) < 0.5 else above - diff * float(dt(1.0) - w)
    return out.astype(dt)


def dynamic_threshold(x0: np.ndarray, ratio: float = 0.995, max_value: float = 1.0) -> np.ndarray:
    """Saharia et al. 2022 (Imagen), Sec. 2.3 dynamic thresholding: per batch element, s = clamp(quantile(|x0|,
    ratio), 1, max_value); x0 is clipped to [-s, s] and divided by s (DDIMScheduler._threshold_sample)."""
    flat = x0.reshape(x0.shape[0], -1)
    s = _torch_quantile_rows(np.abs(flat), ratio)
    s = np.clip(s, 1, max_value).astype(x0.dtype)[:, None]
    return (np.clip(flat, -s, s) / s).reshape(x0.shape)


def ddim_step(model_output: np.ndarray, sample: np.ndarray, alpha_prod_t, alpha_prod_t_prev, *,
              prediction_type: str, eta: float = 0.0, clip_sample: bool = False, clip_sample_range: float = 1.0,
              thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
              noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One DDIM step, Song et al. 2021 ("Denoising Diffusion Implicit Models") Eq. 12 with sigma_t from Eq. 16
    (diffusers' DDIMScheduler.step):

        x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z,
        sigma = eta sqrt((1 - a_prev) / (1 - a_t) (1 - a_t / a_prev)).

    x0 is thresholded (``thresholding``) or clipped (``clip_sample``) before use; eps is the one predicted from
    the unclipped x0. ``noise`` (z) is required when ``eta > 0``. Returns ``(x_prev, x0)``.
    """
    a_t, a_prev = _scalar(alpha_prod_t), _scalar(alpha_prod_t_prev)
    dt = np.result_type(a_t, a_prev).type
    a_t, a_prev = dt(a_t), dt(a_prev)
    one = dt(1.0)
    x0, eps = predict_x0_and_eps(model_output, sample, a_t, prediction_type)
    if thresholding:
        x0 = dynamic_threshold(x0, dynamic_thresholding_ratio, sample_max_value)
    elif clip_sample:
        x0 = np.clip(x0, -clip_sample_range, clip_sample_range).astype(x0.dtype)
    variance = ((one - a_prev) / (one - a_t)) * (one - a_t / a_prev)
    std = dt(eta) * np.sqrt(variance)
    direction = _like(np.sqrt(one - a_prev - std * std), sample) * eps
    prev = _like(np.sqrt(a_prev), sample) * x0 + direction
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs `noise` (standard normal, shaped like the sample)")
        prev = prev + _like(std, sample) * np.asarray(noise, dtype=sample.dtype)
    return prev, x0


def cogvideox_ddim_step(model_output: np.ndarray, sample: np.ndarray, alpha_prod_t, alpha_prod_t_prev, *,
                        prediction_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic DDIM, Song et al. 2021 Eq. 12 with eta = 0, written with eps eliminated
    (diffusers' CogVideoXDDIMScheduler.step):

        x_prev = sqrt((1 - a_prev) / (1 - a_t)) x_t + (sqrt(a_prev) - sqrt(a_t) sqrt((1 - a_prev) / (1 - a_t))) x0.

    No clipping or thresholding: diffusers' CogVideoX step ignores those settings. Returns ``(x_prev, x0)``.
    """
    a_t, a_prev = _scalar(alpha_prod_t), _scalar(alpha_prod_t_prev)
    dt = np.result_type(a_t, a_prev).type
    a_t, a_prev = dt(a_t), dt(a_prev)
    one = dt(1.0)
    x0, _ = predict_x0_and_eps(model_output, sample, a_t, prediction_type)
    c_sample = np.sqrt((one - a_prev) / (one - a_t))
    c_x0 = np.sqrt(a_prev) - np.sqrt(a_t) * c_sample
    return _like(c_sample, sample) * sample + _like(c_x0, sample) * x0, x0


def cogvideox_dpm_step(model_output: np.ndarray, sample: np.ndarray, old_pred_original_sample: np.ndarray | None,
                       alpha_prod_t, alpha_prod_t_prev, alpha_prod_t_back, *, prediction_type: str,
                       noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One SDE-DPM-Solver++(2M) step, Lu et al. 2022 ("DPM-Solver++", arXiv:2211.01095; the SDE variant of
    Algorithm 2), as diffusers' CogVideoXDPMScheduler.step computes it. With lambda = log sqrt(a / (1 - a)),
    h = lambda_prev - lambda_t:

        x_prev = sqrt((1 - a_prev) / (1 - a_t)) e^{-h} x_t + sqrt(a_prev) (1 - e^{-2h}) D
                 + sqrt(1 - a_prev) sqrt(1 - e^{-2h}) z,

    D = x0 (first order) or, with the previous step's x0 and ``alpha_prod_t_back`` (alpha_bar at the previous,
    larger timestep), D = (1 + 1/(2r)) x0 - 1/(2r) x0_old, r = h_old / h (second order). diffusers steps at
    first order on the first step (no history) and on the step that lands past the table (prev timestep < 0);
    the caller passes ``alpha_prod_t_back=None`` or ``old_pred_original_sample=None`` there.

    ``noise`` (z) is always used: diffusers draws it inside the step. Returns ``(x_prev, x0)``; x0 is the
    state for the next step.
    """
    a_t, a_prev = _scalar(alpha_prod_t), _scalar(alpha_prod_t_prev)
    dt = np.result_type(a_t, a_prev).type
    a_t, a_prev = dt(a_t), dt(a_prev)
    one, two = dt(1.0), dt(2.0)
    x0, _ = predict_x0_and_eps(model_output, sample, a_t, prediction_type)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # alpha_bar 0 or 1: lambda = -inf / +inf
        lamb = np.log(np.sqrt(a_t / (one - a_t)))
        lamb_next = np.log(np.sqrt(a_prev / (one - a_prev)))
        h = lamb_next - lamb
        mult1 = np.sqrt((one - a_prev) / (one - a_t)) * np.exp(-h)
        mult2 = np.expm1(-two * h) * np.sqrt(a_prev)
        mult_noise = np.sqrt(one - a_prev) * np.sqrt(one - np.exp(-two * h))
    noise = np.asarray(noise, dtype=sample.dtype)
    if old_pred_original_sample is None or alpha_prod_t_back is None:
        denoised = x0
    else:
        a_back = dt(_scalar(alpha_prod_t_back))
        with np.errstate(divide="ignore", invalid="ignore"):
            lamb_back = np.log(np.sqrt(a_back / (one - a_back)))
            r = (lamb - lamb_back) / h
            mult3 = one + one / (two * r)
            mult4 = one / (two * r)
        denoised = _like(mult3, x0) * x0 - _like(mult4, x0) * old_pred_original_sample
    prev = _like(mult1, sample) * sample - _like(mult2, sample) * denoised + _like(mult_noise, sample) * noise
    return prev, x0


# ------------------------------------------------------------------------- sigma-parameterised steps
# Karras et al. 2022 (EDM) write the VP sample divided by sqrt(alpha_bar) as x = x0 + sigma eps. diffusers keeps x
# on that scale for Euler (init noise times ``init_noise_sigma``, network input divided by sqrt(sigma^2 + 1)) and
# on the VP scale for DPM-Solver. All scalar arithmetic below is float32 (diffusers' 0-d float32 sigma tensors).
_F32 = np.float32


def _exp32(v):
    """float32 exp, correctly rounded (torch's CPU scalar exp almost always is; numpy's float32 SIMD exp is off by
    an ulp in ~30% of cases)."""
    return np.exp(np.asarray(v, dtype=np.float64)).astype(np.float32)[()]


def _log32(v):
    """float32 log, correctly rounded (closer to torch's CPU log than numpy's float32 log)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(v, dtype=np.float64)).astype(np.float32)[()]


def _x0_from_sigma(model_output: np.ndarray, sample: np.ndarray, sigma, sigma_hat, prediction_type: str):
    """x0 from the network output on the sigma scale (x = x0 + sigma eps; the network saw x / sqrt(sigma^2 + 1)).

    "epsilon": x0 = x - sigma_hat eps; "sample": the output is x0; "v_prediction" (Salimans & Ho 2022 on the
    VP scale): x0 = -sigma / sqrt(sigma^2 + 1) v + x / (sigma^2 + 1).
    """
    if prediction_type == "epsilon":
        return sample - sigma_hat * model_output
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        s2p1 = sigma * sigma + _F32(1.0)
        return model_output * (-sigma / np.sqrt(s2p1)) + sample / s2p1
    raise ValueError(f"prediction_type={prediction_type!r} is not known; choose one of {list(PREDICTION_TYPES)}")


def euler_step(model_output: np.ndarray, sample: np.ndarray, sigma, sigma_next, *, prediction_type: str,
               gamma: float = 0.0, s_noise: float = 1.0,
               noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - x0) / sigma, Karras et al. 2022, Algorithm 2
    (lines 4-8 without the 2nd-order correction; diffusers' EulerDiscreteScheduler.step):

        sigma_hat = sigma (1 + gamma);  x_hat = x + sqrt(sigma_hat^2 - sigma^2) s_noise z   (only if gamma > 0)
        x_next = x_hat + (x_hat - x0) / sigma_hat (sigma_next - sigma_hat).

    ``gamma`` is the churn (Algorithm 2's gamma_i; 0 = deterministic) and needs ``noise`` (z). Returns
    ``(x_next, x0)``.
    """
    sigma, sigma_next = _F32(sigma), _F32(sigma_next)
    sigma_hat = sigma * _F32(gamma + 1)
    if gamma > 0:
        if noise is None:
            raise ValueError("euler_step with gamma > 0 (s_churn) needs `noise` (standard normal, shaped like x)")
        eps = np.asarray(noise, dtype=sample.dtype) * _F32(s_noise)
        sample = sample + eps * np.sqrt(sigma_hat * sigma_hat - sigma * sigma)
    x0 = _x0_from_sigma(model_output, sample, sigma, sigma_hat, prediction_type)
    derivative = (sample - x0) / sigma_hat
    return sample + derivative * (sigma_next - sigma_hat), x0


def euler_ancestral_step(model_output: np.ndarray, sample: np.ndarray, sigma, sigma_next, *, prediction_type: str,
                         noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ancestral Euler step (k-diffusion's ``sample_euler_ancestral`` with eta = 1; diffusers'
    EulerAncestralDiscreteScheduler.step): the move from sigma to sigma_next is split into a deterministic Euler
    step down to sigma_down and fresh noise of size sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2 and
    sigma_up = sigma_next sqrt(1 - sigma_next^2 / sigma^2) (the DDPM posterior's variance on the sigma scale).

    Only "epsilon" and "v_prediction" (diffusers raises for "sample"). Returns ``(x_next, x0)``.
    """
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type={prediction_type!r} is not supported by EulerAncestralDiscreteScheduler; "
                         f"choose one of ['epsilon', 'v_prediction']")
    sigma, sigma_next = _F32(sigma), _F32(sigma_next)
    x0 = _x0_from_sigma(model_output, sample, sigma, sigma, prediction_type)
    s_from2, s_to2 = sigma * sigma, sigma_next * sigma_next
    sigma_up = np.sqrt(s_to2 * (s_from2 - s_to2) / s_from2)
    sigma_down = np.sqrt(s_to2 - sigma_up * sigma_up)
    derivative = (sample - x0) / sigma
    prev = sample + derivative * (sigma_down - sigma)
    return prev + np.asarray(noise, dtype=sample.dtype) * sigma_up, x0


def _vp_alpha_sigma(sigma):
    """(alpha_t, sigma_t) of the VP process at EDM noise level sigma: alpha = 1 / sqrt(sigma^2 + 1)."""
    alpha = _F32(1.0) / np.sqrt(sigma * sigma + _F32(1.0))
    return alpha, sigma * alpha


def dpm_solver_data_prediction(model_output: np.ndarray, sample: np.ndarray, sigma, *, prediction_type: str,
                               thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                               sample_max_value: float = 1.0) -> np.ndarray:
    """The data prediction x0 that DPM-Solver++ integrates (Lu et al. 2022, arXiv:2211.01095, Sec. 4), from the
    network output at the VP sample x_t = alpha_t x0 + sigma_t eps (diffusers' DPMSolverMultistepScheduler.
    convert_model_output), optionally dynamically thresholded (Saharia et al. 2022)."""
    alpha_t, sigma_t = _vp_alpha_sigma(_F32(sigma))
    if prediction_type == "epsilon":
        x0 = (sample - sigma_t * model_output) / alpha_t
    elif prediction_type == "sample":
        x0 = model_output
    elif prediction_type == "v_prediction":
        x0 = alpha_t * sample - sigma_t * model_output
    else:
        raise ValueError(f"prediction_type={prediction_type!r} is not known; choose one of {list(PREDICTION_TYPES)}")
    if thresholding:
        x0 = dynamic_threshold(x0, dynamic_thresholding_ratio, sample_max_value)
    return x0


def dpm_solver_pp_update(x0_preds, sigmas, sigma_next, sample: np.ndarray, *, sde: bool = False,
                         solver_type: str = "midpoint", noise: np.ndarray | None = None) -> np.ndarray:
    """One multistep DPM-Solver++ update (Lu et al. 2022, arXiv:2211.01095), from sigmas[-1] to ``sigma_next``.

    ``x0_preds`` are the data predictions at ``sigmas`` (oldest first; the current one last); their number is the
    order: 1 (Eq. 8's first-order step, = DDIM), 2 (Algorithm 2, "2M"; ``solver_type`` "midpoint" or "heun"
    chooses the D1 weight) or 3 (diffusers' 3rd-order multistep). With lambda = log(alpha / sigma_t),
    h = lambda_next - lambda_s0:

        ODE (``sde=False``):  x = (sigma_t / sigma_s0) x_s0 - alpha_t (e^{-h} - 1) D0 + ...
        SDE (``sde=True``, "sde-dpmsolver++", Lu et al. Sec. 5 / Appendix):
            x = (sigma_t / sigma_s0) e^{-h} x_s0 + alpha_t (1 - e^{-2h}) D0 + ... + sigma_t sqrt(1 - e^{-2h}) z

    with D0 = x0 and D1 = (x0 - x0_prev) / r0, r0 = h_prev / h. A terminal ``sigma_next = 0`` gives h = inf and
    x = D0 (the first-order step returns the data prediction). The SDE form needs ``noise`` (z).
    Float32 arithmetic in diffusers' order (DPMSolverMultistepScheduler.*_update).
    """
    order = len(x0_preds)
    if order != len(sigmas) or order not in (1, 2, 3):
        raise ValueError(f"dpm_solver_pp_update takes 1 to 3 data predictions with one sigma each, got "
                         f"{len(x0_preds)} and {len(sigmas)}")
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type={solver_type!r} is not known; choose one of ['midpoint', 'heun']")
    if sde and noise is None:
        raise ValueError("the SDE variant of DPM-Solver++ needs `noise` (standard normal, shaped like the sample)")
    one, two, half = _F32(1.0), _F32(2.0), _F32(0.5)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # sigma_next = 0: lambda = inf
        alpha_t, sigma_t = _vp_alpha_sigma(_F32(sigma_next))
        lambda_t = _log32(alpha_t) - _log32(sigma_t)
        lambdas = []
        for s in sigmas[::-1]:  # s0 (current), s1, s2
            a, sg = _vp_alpha_sigma(_F32(s))
            lambdas.append((_log32(a) - _log32(sg), sg))
        (lambda_s0, sigma_s0) = lambdas[0]
        h = lambda_t - lambda_s0
        e_h = _exp32(-h)
        e_2h = _exp32(-two * h)
        m = list(x0_preds[::-1])  # m0 (current), m1, m2
        if sde:
            x = (sigma_t / sigma_s0 * e_h) * sample + (alpha_t * (one - e_2h)) * m[0]
        else:
            x = (sigma_t / sigma_s0) * sample - (alpha_t * (e_h - one)) * m[0]
        if order >= 2:
            lambda_s1 = lambdas[1][0]
            h_0 = lambda_s0 - lambda_s1
            r0 = h_0 / h
            d1_0 = (one / r0) * (m[0] - m[1])
        if order == 2:
            d1 = d1_0
            if sde:
                if solver_type == "midpoint":
                    x = x + (half * (alpha_t * (one - e_2h))) * d1
                else:
                    x = x + (alpha_t * ((one - e_2h) / (-two * h) + one)) * d1
            else:
                if solver_type == "midpoint":
                    x = x - (half * (alpha_t * (e_h - one))) * d1
                else:
                    x = x + (alpha_t * ((e_h - one) / h + one)) * d1
        elif order == 3:
            h_1 = lambdas[1][0] - lambdas[2][0]
            r1 = h_1 / h
            d1_1 = (one / r1) * (m[1] - m[2])
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (one / (r0 + r1)) * (d1_0 - d1_1)
            if sde:
                x = (x + (alpha_t * ((one - e_2h) / (-two * h) + one)) * d1
                     + (alpha_t * ((one - e_2h - two * h) / ((two * h) * (two * h)) - half)) * d2)
            else:
                x = (x + (alpha_t * ((e_h - one) / h + one)) * d1
                     - (alpha_t * ((e_h - one + h) / (h * h) - half)) * d2)
        if sde:
            x = x + (sigma_t * np.sqrt(one - e_2h)) * np.asarray(noise, dtype=sample.dtype)
    return x


def lcm_boundary_scalings(timestep, timestep_scaling: float = 10.0, sigma_data: float = 0.5):
    """Consistency-model boundary condition (Song et al. 2023, "Consistency Models", Sec. 3 / Appendix C; LCM,
    Luo et al. 2023, Eq. 4): f(x, t) = c_skip(t) x + c_out(t) x0, with s = t * timestep_scaling,
    c_skip = sigma_data^2 / (s^2 + sigma_data^2), c_out = s / sqrt(s^2 + sigma_data^2). Float32."""
    s = _F32(timestep) * _F32(timestep_scaling)
    sd2 = _F32(sigma_data * sigma_data)
    den = s * s + sd2
    c_skip = (_F32(1.0) / den) * sd2  # torch evaluates `float / tensor` as reciprocal(tensor) * float
    c_out = s / np.sqrt(den)
    return c_skip, c_out


def lcm_step(model_output: np.ndarray, sample: np.ndarray, alpha_prod_t, alpha_prod_t_prev, c_skip, c_out, *,
             prediction_type: str, clip_sample: bool = False, clip_sample_range: float = 1.0,
             thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
             noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One multistep latent-consistency step (Luo et al. 2023, Algorithm 3; diffusers' LCMScheduler.step):

        denoised = c_out x0 + c_skip x_t;   x_prev = sqrt(a_prev) denoised + sqrt(1 - a_prev) z.

    x0 is predicted as in DDIM (then clipped / thresholded). ``noise=None`` marks the last step, which returns
    ``denoised`` itself (what LCM pipelines decode). Returns ``(x_prev, denoised)``.
    """
    a_t, a_prev = _scalar(alpha_prod_t), _scalar(alpha_prod_t_prev)
    x0, _ = predict_x0_and_eps(model_output, sample, a_t, prediction_type)
    if thresholding:
        x0 = dynamic_threshold(x0, dynamic_thresholding_ratio, sample_max_value)
    elif clip_sample:
        x0 = np.clip(x0, -clip_sample_range, clip_sample_range).astype(x0.dtype)
    denoised = _like(c_out, sample) * x0 + _like(c_skip, sample) * sample
    if noise is None:
        return denoised, denoised
    one = a_prev.dtype.type(1.0)
    prev = _like(np.sqrt(a_prev), sample) * denoised + _like(np.sqrt(one - a_prev), sample) * np.asarray(
        noise, dtype=sample.dtype)
    return prev, denoised


def pndm_transfer(model_output: np.ndarray, sample: np.ndarray, alpha_prod_t, alpha_prod_t_prev, *,
                  prediction_type: str = "epsilon") -> np.ndarray:
    """PNDM's transfer part (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models", Eq. 9; diffusers'
    PNDMScheduler._get_prev_sample): the DDIM step written with eps,

        x_prev = sqrt(a_prev / a_t) x_t - (a_prev - a_t) eps / (a_t sqrt(1 - a_prev) + sqrt(a_t (1 - a_t) a_prev)).

    A "v_prediction" output is turned into eps = sqrt(a_t) v + sqrt(1 - a_t) x_t first."""
    a_t, a_prev = _scalar(alpha_prod_t), _scalar(alpha_prod_t_prev)
    dt = np.result_type(a_t, a_prev).type
    a_t, a_prev = dt(a_t), dt(a_prev)
    one = dt(1.0)
    b_t, b_prev = one - a_t, one - a_prev
    if prediction_type == "v_prediction":
        model_output = _like(np.sqrt(a_t), sample) * model_output + _like(np.sqrt(b_t), sample) * sample
    elif prediction_type != "epsilon":
        raise ValueError(f"prediction_type={prediction_type!r} is not supported by PNDMScheduler; "
                         f"choose one of ['epsilon', 'v_prediction']")
    sample_coeff = np.sqrt(a_prev / a_t)
    denom = a_t * np.sqrt(b_prev) + np.sqrt(a_t * b_t * a_prev)
    return _like(sample_coeff, sample) * sample - (_like(a_prev - a_t, sample) * model_output) / _like(denom, sample)


def plms_combine(ets) -> np.ndarray:
    """Linear multistep (Adams-Bashforth) combination of the last eps predictions, newest last (Liu et al. 2022,
    Eq. 12 and its lower-order start): e, (3 e1 - e2) / 2, (23 e1 - 16 e2 + 5 e3) / 12,
    (55 e1 - 59 e2 + 37 e3 - 9 e4) / 24."""
    e = list(ets)[::-1]
    f = e[0].dtype.type
    if len(e) == 1:
        return e[0]
    if len(e) == 2:
        return (f(3) * e[0] - e[1]) / f(2)
    if len(e) == 3:
        return (f(23) * e[0] - f(16) * e[1] + f(5) * e[2]) / f(12)
    return f(1 / 24) * (f(55) * e[0] - f(59) * e[1] + f(37) * e[2] - f(9) * e[3])


# ------------------------------------------------------------------------------------------- Sampler
StepFn = Callable[["Sampler", np.ndarray, np.ndarray, int, Any, "np.ndarray | None"], tuple]


@dataclass(frozen=True, eq=False)
class Sampler:
    """A step function bound to its tables. The one sampling loop reads:

    ``x = noise * init_noise_sigma``; for ``i, t in enumerate(timesteps)``: ``out = model(scale_model_input(x, i),
    t)``; ``x, state = step(out, x, i, state, noise_i if needs_noise else None)``, with ``state = None`` at first.

    ``prev_timesteps[i]`` is the timestep diffusers steps to (``t - T // n``, negative = past the table; for
    "trailing"/"linspace" spacings it need not equal ``timesteps[i + 1]``, as in diffusers).

    Sigma-parameterised samplers (Euler, Euler-ancestral, DPM-Solver multistep) also carry ``sigmas`` (float32,
    one more entry than ``timesteps``: step i moves from ``sigmas[i]`` to ``sigmas[i + 1]``; the terminal value
    is 0, or sigma_min with ``final_sigmas_type="sigma_min"``); their ``prev_timesteps`` are ``timesteps[i + 1]``
    and -1 for the last step. Their ``timesteps`` may be fractional (float32), e.g. Stable Video Diffusion's
    continuous ``0.25 log sigma``.
    """

    name: str
    timesteps: np.ndarray
    init_noise_sigma: float
    needs_noise: bool
    schedule: NoiseSchedule
    prev_timesteps: np.ndarray
    options: Mapping[str, Any]
    step_fn: StepFn = field(repr=False)
    scale_fn: Callable[["Sampler", np.ndarray, int], np.ndarray] | None = field(default=None, repr=False)
    sigmas: np.ndarray | None = field(default=None, repr=False)
    add_noise_fn: Callable[["Sampler", np.ndarray, np.ndarray, int], np.ndarray] | None = field(default=None,
                                                                                            repr=False)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def _check_index(self, i: int) -> int:
        if not 0 <= i < self.num_steps:
            raise ValueError(f"step index i={i} is outside 0..{self.num_steps - 1}")
        return int(i)

    def scale_model_input(self, x: np.ndarray, i: int) -> np.ndarray:
        """The network input at step i (identity for the DDIM family; sigma-parameterised samplers scale here)."""
        i = self._check_index(i)
        return x if self.scale_fn is None else self.scale_fn(self, x, i)

    def step(self, model_output: np.ndarray, x: np.ndarray, i: int, state: Any = None,
             noise: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """Move ``x`` from ``timesteps[i]`` to the next noise level; returns ``(x_next, state)``."""
        i = self._check_index(i)
        if self.needs_noise and noise is None:
            raise ValueError(f"{self.name} draws fresh noise at every step: pass `noise` shaped like x")
        return self.step_fn(self, model_output, x, i, state, noise if self.needs_noise else None)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, i: int) -> np.ndarray:
        """x at ``timesteps[i]`` from clean x0 (forward process q(x_t | x0), Ho et al. 2020 Eq. 4; diffusers'
        ``scheduler.add_noise(x0, noise, timesteps[i])``, which rounds alpha_bar to x0's dtype first).
        Sigma-parameterised samplers use their own form (Euler: ``x0 + sigma_i noise``)."""
        i = self._check_index(i)
        if self.add_noise_fn is not None:
            return self.add_noise_fn(self, x0, np.asarray(noise, dtype=x0.dtype), i)
        a = x0.dtype.type(self.schedule.alphas_cumprod[int(self.timesteps[i])])
        one = x0.dtype.type(1.0)
        return np.sqrt(a) * x0 + np.sqrt(one - a) * np.asarray(noise, dtype=x0.dtype)


def _alphas(sp: Sampler, i: int):
    return sp.schedule.alpha_bar(int(sp.timesteps[i])), sp.schedule.alpha_bar(int(sp.prev_timesteps[i]))


def _ddim_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    a_t, a_prev = _alphas(sp, i)
    x_next, _ = ddim_step(model_output, x, a_t, a_prev, noise=noise, **sp.options)
    return x_next, state


def _cogvideox_ddim_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    a_t, a_prev = _alphas(sp, i)
    x_next, _ = cogvideox_ddim_step(model_output, x, a_t, a_prev, **sp.options)
    return x_next, state


def _cogvideox_dpm_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    a_t, a_prev = _alphas(sp, i)
    second_order = i > 0 and state is not None and sp.prev_timesteps[i] >= 0
    a_back = sp.schedule.alpha_bar(int(sp.timesteps[i - 1])) if second_order else None
    return cogvideox_dpm_step(model_output, x, state, a_t, a_prev, a_back, noise=noise, **sp.options)


# ------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class _Entry:
    build: Callable[[dict, int], Sampler]
    # config keys diffusers stores for this class but whose step never reads: accepted in a config file,
    # refused as overrides (an override that silently does nothing would make a misleading ablation)
    inert: frozenset
    # key -> allowed values, checked for config files and overrides alike
    choices: Mapping[str, tuple] = field(default_factory=lambda: MappingProxyType({}))
    # diffusers options this toolkit does not implement: accepted only at their default value
    unsupported: frozenset = frozenset()


SCHEDULERS: dict[str, Mapping[str, Any]] = {}
"""name (diffusers' ``_class_name``) -> its settings and their defaults (diffusers' constructor defaults, plus
step arguments such as DDIM's ``eta``). Read-only mappings; add a sampler with ``register_scheduler``."""
_ENTRIES: dict[str, _Entry] = {}


def register_scheduler(name: str, defaults: Mapping[str, Any], build: Callable[[dict, int], Sampler],
                       inert: tuple[str, ...] = (), *, choices: Mapping[str, tuple] | None = None,
                       unsupported: tuple[str, ...] = ()) -> None:
    """Add a sampler: ``build(settings, num_inference_steps) -> Sampler`` gets every key of ``defaults``.

    ``inert``: keys the step ignores (refused as overrides); ``choices``: allowed values per key;
    ``unsupported``: diffusers options not implemented here, refused unless they keep their default value."""
    if name in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} is already registered")
    SCHEDULERS[name] = MappingProxyType(dict(defaults))
    _ENTRIES[name] = _Entry(build, frozenset(inert), MappingProxyType(dict(choices or {})), frozenset(unsupported))


_TABLE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
               "rescale_betas_zero_snr", "set_alpha_to_one")


def _timesteps_for(s: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    T = int(s["num_train_timesteps"])
    ts = inference_timesteps(n, T, s["timestep_spacing"], int(s["steps_offset"]))
    prev = ts - T // n
    prev.setflags(write=False)
    return ts, prev


def _build_ddim(s: dict, n: int) -> Sampler:
    schedule = ddim_noise_schedule(**{k: s[k] for k in _TABLE_KEYS})
    ts, prev = _timesteps_for(s, n)
    opts = {k: s[k] for k in ("prediction_type", "eta", "clip_sample", "clip_sample_range", "thresholding",
                              "dynamic_thresholding_ratio", "sample_max_value")}
    return Sampler("DDIMScheduler", ts, 1.0, float(s["eta"]) > 0, schedule, prev, MappingProxyType(opts),
                   _ddim_sampler_step)


def _build_cogvideox(name: str, step_fn: StepFn, needs_noise: bool):
    def build(s: dict, n: int) -> Sampler:
        schedule = cogvideox_noise_schedule(snr_shift_scale=s["snr_shift_scale"], **{k: s[k] for k in _TABLE_KEYS})
        ts, prev = _timesteps_for(s, n)
        opts = MappingProxyType({"prediction_type": s["prediction_type"]})
        return Sampler(name, ts, 1.0, needs_noise, schedule, prev, opts, step_fn)
    return build


_VP_DEFAULTS = dict(num_train_timesteps=1000, trained_betas=None, clip_sample=True, set_alpha_to_one=True,
                    steps_offset=0, prediction_type="epsilon", clip_sample_range=1.0, sample_max_value=1.0,
                    timestep_spacing="leading", rescale_betas_zero_snr=False)
register_scheduler("DDIMScheduler",
                   dict(_VP_DEFAULTS, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", thresholding=False,
                        dynamic_thresholding_ratio=0.995, eta=0.0),
                   _build_ddim)
_COGVIDEOX_DEFAULTS = dict(_VP_DEFAULTS, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           snr_shift_scale=3.0)
register_scheduler("CogVideoXDDIMScheduler", _COGVIDEOX_DEFAULTS,
                   _build_cogvideox("CogVideoXDDIMScheduler", _cogvideox_ddim_sampler_step, False),
                   inert=("clip_sample", "clip_sample_range", "sample_max_value"))
register_scheduler("CogVideoXDPMScheduler", _COGVIDEOX_DEFAULTS,
                   _build_cogvideox("CogVideoXDPMScheduler", _cogvideox_dpm_sampler_step, True),
                   inert=("clip_sample", "clip_sample_range", "sample_max_value"))


# ------------------------------------------------------------------- sigma-parameterised samplers
_SIGMA_TABLE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                     "rescale_betas_zero_snr")


def _sigma_scale_input(sp: Sampler, x: np.ndarray, i: int) -> np.ndarray:
    # diffusers: sample / ((sigma**2 + 1) ** 0.5) with sigma a float32 0-d tensor (the EDM c_in of a VP network)
    sigma = sp.sigmas[i]
    return x / np.sqrt(sigma * sigma + _F32(1.0))


def _sigma_add_noise(sp: Sampler, x0, noise, i):
    return x0 + noise * x0.dtype.type(sp.sigmas[i])


def _vp_add_noise_from_sigma(sp: Sampler, x0, noise, i):
    alpha, sigma = _vp_alpha_sigma(x0.dtype.type(sp.sigmas[i]))
    return alpha * x0 + sigma * noise


def _init_noise_sigma(sigmas: np.ndarray, timestep_spacing: str) -> float:
    # diffusers' Euler `init_noise_sigma` property: the largest sigma, or sqrt(sigma_max^2 + 1) for "leading"
    # spacing (float32), regardless of Karras sigmas
    m = sigmas.max()
    return float(m if timestep_spacing in ("linspace", "trailing") else np.sqrt(m * m + _F32(1.0)))


def _next_timesteps(ts: np.ndarray) -> np.ndarray:
    return _frozen_array(np.concatenate([ts[1:], np.array([-1], dtype=ts.dtype)]))


def _frozen_array(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _step_sigmas(sig: np.ndarray, train_sigmas: np.ndarray, final_sigmas_type: str) -> np.ndarray:
    """Inference sigmas with the terminal value appended, rounded to float32 once (as diffusers)."""
    last = train_sigmas[0] if final_sigmas_type == "sigma_min" else 0.0
    return _frozen_array(np.concatenate([np.asarray(sig, dtype=np.float64), [float(last)]]).astype(np.float32))


def _karras_for(s: dict, sig: np.ndarray, n: int) -> np.ndarray:
    # diffusers reads sigma_min / sigma_max from the config when it has them (even for DPMSolverMultistep, whose
    # constructor lacks them), else the ends of the sigmas being converted
    lo = s.get("sigma_min")
    hi = s.get("sigma_max")
    return karras_sigmas(float(sig[-1]) if lo is None else float(lo), float(sig[0]) if hi is None else float(hi), n)


def _euler_gamma(sp: Sampler, i: int) -> float:
    o = sp.options
    sigma = sp.sigmas[i]
    if o["s_churn"] > 0 and o["s_tmin"] <= sigma <= o["s_tmax"]:
        return min(o["s_churn"] / (len(sp.sigmas) - 1), 2 ** 0.5 - 1)
    return 0.0


def _euler_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    x_next, _ = euler_step(model_output, x, sp.sigmas[i], sp.sigmas[i + 1], prediction_type=sp.options[
        "prediction_type"], gamma=_euler_gamma(sp, i), s_noise=sp.options["s_noise"], noise=noise)
    return x_next, state


def _build_euler(s: dict, n: int) -> Sampler:
    schedule = sigma_noise_schedule(**{k: s[k] for k in _SIGMA_TABLE_KEYS})
    T = schedule.num_train_timesteps
    train_sigmas = vp_sigmas(schedule.alphas_cumprod)              # float32, ascending in t
    log_sigmas = np.log(train_sigmas)
    ts = euler_timesteps(n, T, s["timestep_spacing"], int(s["steps_offset"]))
    if s["interpolation_type"] == "linear":
        sig = np.interp(ts, np.arange(0, T), train_sigmas)
    else:
        # "log_linear": n + 1 sigmas log-spaced over the whole training range, as diffusers makes them (with the
        # terminal value appended below, the table then has n + 2 entries and the last step ends at sigma_min
        # of the training table rather than at the terminal value: diffusers' behaviour, kept)
        sig = np.exp(torch_linspace(float(log_sigmas[-1]), float(log_sigmas[0]), n + 1, np.float32))
    if s["use_karras_sigmas"]:
        sig = _karras_for(s, sig, n)
        ts = sigma_to_t(sig, log_sigmas)
    sigmas = _step_sigmas(sig, train_sigmas, s["final_sigmas_type"])
    if s["timestep_type"] == "continuous" and s["prediction_type"] == "v_prediction":
        ts = _F32(0.25) * _log32(sigmas[:-1])                         # EDM's c_noise = log(sigma) / 4
    ts = _frozen_array(np.asarray(ts).astype(np.float32))
    opts = {k: s[k] for k in ("prediction_type", "s_churn", "s_tmin", "s_tmax", "s_noise")}
    return Sampler("EulerDiscreteScheduler", ts, _init_noise_sigma(sigmas, s["timestep_spacing"]),
                   float(s["s_churn"]) > 0, schedule, _next_timesteps(ts), MappingProxyType(opts),
                   _euler_sampler_step, _sigma_scale_input, sigmas, _sigma_add_noise)


def _euler_ancestral_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    x_next, _ = euler_ancestral_step(model_output, x, sp.sigmas[i], sp.sigmas[i + 1],
                                     prediction_type=sp.options["prediction_type"], noise=noise)
    return x_next, state


def _build_euler_ancestral(s: dict, n: int) -> Sampler:
    schedule = sigma_noise_schedule(**{k: s[k] for k in _SIGMA_TABLE_KEYS})
    T = schedule.num_train_timesteps
    train_sigmas = vp_sigmas(schedule.alphas_cumprod)
    ts = euler_timesteps(n, T, s["timestep_spacing"], int(s["steps_offset"]))
    sigmas = _step_sigmas(np.interp(ts, np.arange(0, T), train_sigmas), train_sigmas, "zero")
    opts = MappingProxyType({"prediction_type": s["prediction_type"]})
    return Sampler("EulerAncestralDiscreteScheduler", ts, _init_noise_sigma(sigmas, s["timestep_spacing"]), True,
                   schedule, _next_timesteps(ts), opts, _euler_ancestral_sampler_step, _sigma_scale_input, sigmas,
                   _sigma_add_noise)


def _dpm_solver_order(sp: Sampler, i: int, history: tuple) -> int:
    """The order diffusers' DPMSolverMultistepScheduler.step uses at step i with ``len(history)`` earlier data
    predictions (its ``lower_order_nums``): lower at the start, and near the end of short runs."""
    o, n = sp.options, sp.num_steps
    lower_final = i == n - 1 and (o["euler_at_final"] or (o["lower_order_final"] and n < 15)
                                  or o["final_sigmas_type"] == "zero")
    lower_second = i == n - 2 and o["lower_order_final"] and n < 15
    if o["solver_order"] == 1 or len(history) < 1 or lower_final:
        return 1
    if o["solver_order"] == 2 or len(history) < 2 or lower_second:
        return 2
    return 3


def _dpm_solver_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    """State: the data predictions of the previous steps (oldest first, at most solver_order - 1 of them)."""
    o = sp.options
    history = tuple(state or ())
    x0 = dpm_solver_data_prediction(model_output, x, sp.sigmas[i], prediction_type=o["prediction_type"],
                                    thresholding=o["thresholding"],
                                    dynamic_thresholding_ratio=o["dynamic_thresholding_ratio"],
                                    sample_max_value=o["sample_max_value"])
    order = _dpm_solver_order(sp, i, history)
    preds = (history + (x0,))[-order:]
    sigmas = [sp.sigmas[i - k] for k in range(order - 1, -1, -1)]
    x_next = dpm_solver_pp_update(preds, sigmas, sp.sigmas[i + 1], x.astype(np.float32, copy=False),
                                  sde=o["algorithm_type"] == "sde-dpmsolver++", solver_type=o["solver_type"],
                                  noise=noise)
    keep = int(o["solver_order"]) - 1
    return x_next, ((history + (x0,))[-keep:] if keep > 0 else ())


def _build_dpm_solver(s: dict, n: int) -> Sampler:
    schedule = sigma_noise_schedule(**{k: s[k] for k in _SIGMA_TABLE_KEYS})
    T = schedule.num_train_timesteps
    acp = schedule.alphas_cumprod
    with np.errstate(divide="ignore"):
        lambda_t = np.log(np.sqrt(acp)) - np.log(np.sqrt(_F32(1.0) - acp))
    clipped = int(np.searchsorted(lambda_t[::-1], _F32(s["lambda_min_clipped"])))
    ts = dpm_solver_timesteps(n, T, s["timestep_spacing"], int(s["steps_offset"]), T - clipped)
    train_sigmas = vp_sigmas(acp)
    if s["use_karras_sigmas"]:
        sig = _karras_for(s, train_sigmas[::-1], n)
        ts = sigma_to_t(sig, np.log(train_sigmas))
        if s["beta_schedule"] != "squaredcos_cap_v2":
            ts = ts.round()
    else:
        sig = np.interp(ts, np.arange(0, T), train_sigmas)
    sigmas = _step_sigmas(sig, train_sigmas, s["final_sigmas_type"])
    ts = _frozen_array(np.asarray(ts).astype(np.int64))
    opts = {k: s[k] for k in ("prediction_type", "thresholding", "dynamic_thresholding_ratio", "sample_max_value",
                              "algorithm_type", "solver_type", "solver_order", "lower_order_final",
                              "euler_at_final", "final_sigmas_type")}
    return Sampler("DPMSolverMultistepScheduler", ts, 1.0, s["algorithm_type"] == "sde-dpmsolver++", schedule,
                   _next_timesteps(ts), MappingProxyType(opts), _dpm_solver_sampler_step, None, sigmas,
                   _vp_add_noise_from_sigma)


# ------------------------------------------------------------------------------------ LCM and PNDM
def _lcm_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    o = sp.options
    t = int(sp.timesteps[i])
    last = i == sp.num_steps - 1
    a_t = sp.schedule.alpha_bar(t)
    a_prev = sp.schedule.alpha_bar(int(sp.prev_timesteps[i])) if not last else a_t
    c_skip, c_out = lcm_boundary_scalings(t, o["timestep_scaling"])
    x_next, _ = lcm_step(model_output, x, a_t, a_prev, c_skip, c_out, noise=None if last else noise,
                         **{k: v for k, v in o.items() if k != "timestep_scaling"})
    return x_next, state


def _build_lcm(s: dict, n: int) -> Sampler:
    schedule = ddim_noise_schedule(**{k: s[k] for k in _TABLE_KEYS})
    ts = lcm_timesteps(n, schedule.num_train_timesteps, int(s["original_inference_steps"]))
    opts = {k: s[k] for k in ("prediction_type", "clip_sample", "clip_sample_range", "thresholding",
                              "dynamic_thresholding_ratio", "sample_max_value", "timestep_scaling")}
    # diffusers draws no noise at the last step; the loop's draw there is simply unused
    return Sampler("LCMScheduler", ts, 1.0, True, schedule, _next_timesteps(ts), MappingProxyType(opts),
                   _lcm_sampler_step)


@dataclass(frozen=True)
class PNDMState:
    """PNDM's carried state: the eps predictions of the grid points so far (newest last, at most 4 kept), the
    sample at the start of the current Runge-Kutta / first PLMS step, and the Runge-Kutta running sum."""
    ets: tuple = ()
    cur_sample: np.ndarray | None = None
    cur_model_output: Any = 0


def _pndm_sampler_step(sp: Sampler, model_output, x, i, state, noise):
    """diffusers' PNDMScheduler.step_prk / step_plms, with its counter being the step index i."""
    st = state if state is not None else PNDMState()
    o = sp.options
    a_t = sp.schedule.alpha_bar(int(o["alpha_timesteps"][i]))
    a_prev = sp.schedule.alpha_bar(int(sp.prev_timesteps[i]))
    f = x.dtype.type
    ets, cur_sample, cur_mo = st.ets, st.cur_sample, st.cur_model_output
    if i < o["prk_steps"]:
        # 4th-order Runge-Kutta over one grid interval: evaluations at t, t - d/2, t - d/2, t - d
        stage = i % 4
        if stage == 0:
            cur_mo = cur_mo + f(1 / 6) * model_output
            ets = ets + (model_output,)
            cur_sample = x
        elif stage in (1, 2):
            cur_mo = cur_mo + f(1 / 3) * model_output
        else:
            model_output = cur_mo + f(1 / 6) * model_output
            cur_mo = 0
        base = cur_sample if cur_sample is not None else x
        x_next = pndm_transfer(model_output, base, a_t, a_prev, prediction_type=o["prediction_type"])
        return x_next, PNDMState(ets, cur_sample, cur_mo)
    # PLMS (linear multistep). Without PRK the second grid point is visited twice: step 0 goes from t0 to t1 with
    # e0, step 1 restarts from x(t0) with the average of e0 and e1 (a 2nd-order, Heun-like start).
    base = x
    if i != 1:
        ets = ets[-3:] + (model_output,)
    if len(ets) == 1 and i == 0:
        e = model_output
        cur_sample = x
    elif len(ets) == 1 and i == 1:
        e = (model_output + ets[-1]) / f(2)
        base, cur_sample = cur_sample, None
    else:
        e = plms_combine(ets)
    x_next = pndm_transfer(e, base, a_t, a_prev, prediction_type=o["prediction_type"])
    return x_next, PNDMState(ets, cur_sample, cur_mo)


def _build_pndm(s: dict, n: int) -> Sampler:
    schedule = ddim_noise_schedule(**{k: s[k] for k in _TABLE_KEYS if k != "rescale_betas_zero_snr"})
    T = schedule.num_train_timesteps
    ts, prk_steps = pndm_timesteps(n, T, s["timestep_spacing"], int(s["steps_offset"]), bool(s["skip_prk_steps"]))
    d = T // n
    alpha_ts, prev_ts = ts.copy(), ts - d
    for i in range(prk_steps):
        prev_ts[i] = ts[i] - (0 if i % 2 else d // 2)
        alpha_ts[i] = ts[i // 4 * 4]
    if prk_steps == 0 and len(ts) > 1:
        alpha_ts[1], prev_ts[1] = ts[1] + d, ts[1]   # step 1 redoes t0 -> t1
    opts = {"prediction_type": s["prediction_type"], "prk_steps": prk_steps,
            "alpha_timesteps": _frozen_array(alpha_ts)}
    return Sampler("PNDMScheduler", ts, 1.0, False, schedule, _frozen_array(prev_ts), MappingProxyType(opts),
                   _pndm_sampler_step)


_SIGMA_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                       trained_betas=None, prediction_type="epsilon", timestep_spacing="linspace", steps_offset=0,
                       rescale_betas_zero_snr=False)
_FINAL_SIGMAS = ("zero", "sigma_min")
register_scheduler(
    "EulerDiscreteScheduler",
    dict(_SIGMA_DEFAULTS, interpolation_type="linear", use_karras_sigmas=False, use_exponential_sigmas=False,
         use_beta_sigmas=False, sigma_min=None, sigma_max=None, timestep_type="discrete", final_sigmas_type="zero",
         s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0),
    _build_euler,
    choices={"interpolation_type": ("linear", "log_linear"), "timestep_type": ("discrete", "continuous"),
             "final_sigmas_type": _FINAL_SIGMAS},
    unsupported=("use_exponential_sigmas", "use_beta_sigmas"))
register_scheduler("EulerAncestralDiscreteScheduler", _SIGMA_DEFAULTS, _build_euler_ancestral,
                   choices={"prediction_type": ("epsilon", "v_prediction")})
register_scheduler(
    "DPMSolverMultistepScheduler",
    dict(_SIGMA_DEFAULTS, solver_order=2, thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0,
         algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True, euler_at_final=False,
         use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False, use_lu_lambdas=False,
         use_flow_sigmas=False, flow_shift=1.0, final_sigmas_type="zero", lambda_min_clipped=-float("inf"),
         variance_type=None, use_dynamic_shifting=False, time_shift_type="exponential",
         sigma_min=None, sigma_max=None),  # read by diffusers' Karras conversion when the config has them
    _build_dpm_solver,
    inert=("flow_shift", "time_shift_type"),
    choices={"algorithm_type": ("dpmsolver++", "sde-dpmsolver++"), "solver_type": ("midpoint", "heun"),
             "solver_order": (1, 2, 3), "final_sigmas_type": _FINAL_SIGMAS},
    unsupported=("use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "variance_type",
                 "use_dynamic_shifting"))
register_scheduler(
    "LCMScheduler",
    dict(_VP_DEFAULTS, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", original_inference_steps=50,
         clip_sample=False, thresholding=False, dynamic_thresholding_ratio=0.995, timestep_scaling=10.0),
    _build_lcm,
    inert=("steps_offset", "timestep_spacing"))
register_scheduler(
    "PNDMScheduler",
    dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", trained_betas=None,
         skip_prk_steps=False, set_alpha_to_one=False, prediction_type="epsilon", timestep_spacing="leading",
         steps_offset=0),
    _build_pndm,
    choices={"prediction_type": ("epsilon", "v_prediction")})


# ------------------------------------------------------------------------------------ validation/build
def _check_name(name: str) -> None:
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} is not known; choose one of {sorted(SCHEDULERS)}")


def _check_values(name: str, s: Mapping[str, Any]) -> None:
    def one_of(key, allowed):
        if key in s and s[key] not in allowed:
            raise ValueError(f"{name}: {key}={s[key]!r} is not known; choose one of {list(allowed)}")

    one_of("prediction_type", PREDICTION_TYPES)
    one_of("timestep_spacing", TIMESTEP_SPACINGS)
    if s.get("trained_betas") is None:
        one_of("beta_schedule", tuple(BETA_SCHEDULES))
    if "eta" in s and not float(s["eta"]) >= 0:
        raise ValueError(f"{name}: eta={s['eta']!r} must be >= 0")
    if "num_train_timesteps" in s and not int(s["num_train_timesteps"]) >= 1:
        raise ValueError(f"{name}: num_train_timesteps={s['num_train_timesteps']!r} must be >= 1")
    entry = _ENTRIES.get(name)
    if entry is None:
        return
    for key, allowed in entry.choices.items():
        one_of(key, allowed)
    for key in sorted(entry.unsupported):
        if key in s and s[key] != SCHEDULERS[name][key]:
            raise ValueError(f"{name}: {key}={s[key]!r} is not supported by this toolkit; only the default "
                             f"{SCHEDULERS[name][key]!r} is (supported settings: {sorted(_settable(name))})")
    for key in ("s_churn", "s_noise", "timestep_scaling"):
        if key in s and not float(s[key]) >= 0:
            raise ValueError(f"{name}: {key}={s[key]!r} must be >= 0")


def _settable(name: str) -> set:
    return set(SCHEDULERS[name]) - _ENTRIES[name].inert - _ENTRIES[name].unsupported


def validate_scheduler(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check a scheduler name and override keys/values (before any model loads); returns defaults + overrides.

    Unknown names, unknown keys, and keys the class's step ignores raise ValueError naming the offender and
    listing what is allowed.
    """
    _check_name(name)
    overrides = dict(overrides or {})
    allowed = sorted(_settable(name))
    for key in overrides:
        if key in _ENTRIES[name].inert:
            raise ValueError(f"{name}: override {key!r} has no effect (diffusers' {name}.step ignores it); "
                             f"allowed overrides: {allowed}")
        if key not in SCHEDULERS[name]:
            raise ValueError(f"{name}: unknown override {key!r}; allowed overrides: {allowed}")
    settings = dict(SCHEDULERS[name], **overrides)
    _check_values(name, settings)
    return settings


def build_sampler(scheduler_config: Mapping[str, Any], num_inference_steps: int,
                  overrides: Mapping[str, Any] | None = None, *, name: str | None = None) -> Sampler:
    """A Sampler from a diffusers ``scheduler_config.json`` dict.

    ``_class_name`` picks the step (``name`` replaces it, like diffusers' ``OtherScheduler.from_config(config)``).
    Config keys the class does not know are ignored, as diffusers does (so a config can be reused across
    classes); ``overrides`` are strict (see ``validate_scheduler``) and win over the config.
    """
    name = name if name is not None else scheduler_config.get("_class_name")
    if name is None:
        raise ValueError(f"scheduler config has no '_class_name'; choose one of {sorted(SCHEDULERS)}")
    validate_scheduler(name, overrides)
    settings = dict(SCHEDULERS[name])
    settings.update({k: v for k, v in scheduler_config.items() if k in settings})
    settings.update(overrides or {})
    _check_values(name, settings)
    if not 1 <= int(num_inference_steps) <= int(settings["num_train_timesteps"]):
        raise ValueError(f"num_inference_steps={num_inference_steps} must be between 1 and "
                         f"num_train_timesteps={settings['num_train_timesteps']}")
    return _ENTRIES[name].build(settings, int(num_inference_steps))
