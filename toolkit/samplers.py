"""Denoising steps as pure numpy functions, and a ``Sampler`` that binds one of them to a schedule.

Every step function reads only its arguments: the network output, the current sample, the alpha_bar values it
moves between (looked up by the caller in a ``NoiseSchedule``), options, and, for a stochastic step, the noise.
Multistep state (the DPM solver's previous x0 prediction) is passed in and returned, never kept in an object.

Numerics follow diffusers' schedulers, which compute in torch: the scalar coefficients are computed in the
table's dtype (float32 for DDIMScheduler, float64 for CogVideoX's scaled_linear tables) and rounded to the
sample's dtype (float32) once, right where torch multiplies a 0-d tensor into a float32 tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from toolkit.schedules import (BETA_SCHEDULES, TIMESTEP_SPACINGS, NoiseSchedule, cogvideox_noise_schedule,
                               ddim_noise_schedule, inference_timesteps)

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


# ------------------------------------------------------------------------------------------- Sampler
StepFn = Callable[["Sampler", np.ndarray, np.ndarray, int, Any, "np.ndarray | None"], tuple]


@dataclass(frozen=True, eq=False)
class Sampler:
    """A step function bound to its tables. The one sampling loop reads:

    ``x = noise * init_noise_sigma``; for ``i, t in enumerate(timesteps)``: ``out = model(scale_model_input(x, i),
    t)``; ``x, state = step(out, x, i, state, noise_i if needs_noise else None)``, with ``state = None`` at first.

    ``prev_timesteps[i]`` is the timestep diffusers steps to (``t - T // n``, negative = past the table; for
    "trailing"/"linspace" spacings it need not equal ``timesteps[i + 1]``, as in diffusers).
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
        ``scheduler.add_noise(x0, noise, timesteps[i])``, which rounds alpha_bar to x0's dtype first)."""
        i = self._check_index(i)
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


SCHEDULERS: dict[str, Mapping[str, Any]] = {}
"""name (diffusers' ``_class_name``) -> its settings and their defaults (diffusers' constructor defaults, plus
step arguments such as DDIM's ``eta``). Read-only mappings; add a sampler with ``register_scheduler``."""
_ENTRIES: dict[str, _Entry] = {}


def register_scheduler(name: str, defaults: Mapping[str, Any], build: Callable[[dict, int], Sampler],
                       inert: tuple[str, ...] = ()) -> None:
    """Add a sampler: ``build(settings, num_inference_steps) -> Sampler`` gets every key of ``defaults``."""
    if name in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} is already registered")
    SCHEDULERS[name] = MappingProxyType(dict(defaults))
    _ENTRIES[name] = _Entry(build, frozenset(inert))


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


def validate_scheduler(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check a scheduler name and override keys/values (before any model loads); returns defaults + overrides.

    Unknown names, unknown keys, and keys the class's step ignores raise ValueError naming the offender and
    listing what is allowed.
    """
    _check_name(name)
    overrides = dict(overrides or {})
    allowed = sorted(set(SCHEDULERS[name]) - _ENTRIES[name].inert)
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
