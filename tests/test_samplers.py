"""Step functions and Sampler against diffusers' schedulers: whole runs of a few steps on random stand-in network
outputs, our x compared with diffusers' x after every step (errors would compound through the chain).

Tolerance: relative 2e-6 of the largest |x| at that step. The CogVideoX runs (float64 tables) come out
bit-identical here; DDIMScheduler's tables are float32, and torch's CPU float32 sqrt is not correctly rounded
(about 20% of results are 1 ulp off), so its coefficients differ from ours by an ulp now and then.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.samplers import (PREDICTION_TYPES, SCHEDULERS, Sampler, build_sampler, cogvideox_ddim_step,
                              cogvideox_dpm_step, ddim_step, dynamic_threshold, validate_scheduler)

SHAPE = (2, 3, 4, 5, 6)  # [B, F, C, H, W] as CogVideoX lays out its latents
RTOL = 2e-6
COGVIDEOX_KW = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                    num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                    set_alpha_to_one=True, snr_shift_scale=3.0, steps_offset=0, timestep_spacing="trailing")


def _torch():
    torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
    pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")
    return torch


def assert_close(ours, ref, what=""):
    ref = np.asarray(ref)
    assert np.all(np.isfinite(ref)), what
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max(), err_msg=what)


def _config(scheduler) -> dict:
    """What a pipeline folder's scheduler/scheduler_config.json holds."""
    return json.loads(scheduler.to_json_string())


def run_both(cls_name, kw, num_steps, overrides=None, seed=0, monkeypatch=None, step_kwargs=None):
    """Chain ``num_steps`` steps of diffusers' scheduler and of our Sampler on the same random model outputs
    and noises; compare x after each step."""
    torch = _torch()
    import diffusers
    import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_module

    ref = getattr(diffusers, cls_name)(**kw)
    ref.set_timesteps(num_steps)
    sampler = build_sampler(_config(ref), num_steps, overrides)
    np.testing.assert_array_equal(sampler.timesteps, ref.timesteps.numpy())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE, dtype=np.float32)
    x_ref = torch.from_numpy(x.copy())
    state, old = None, None
    current_noise = {}
    if monkeypatch is not None:  # the DPM draws its noise inside the step: hand it ours
        monkeypatch.setattr(dpm_module, "randn_tensor", lambda *a, **k: torch.from_numpy(current_noise["z"].copy()))
    for i, t in enumerate(ref.timesteps):
        model_output = 2 * rng.standard_normal(SHAPE, dtype=np.float32)
        noise = rng.standard_normal(SHAPE, dtype=np.float32)
        current_noise["z"] = noise
        mo = torch.from_numpy(model_output.copy())
        if cls_name == "CogVideoXDPMScheduler":
            x_ref, old = ref.step(mo, old, t, ref.timesteps[i - 1] if i > 0 else None, x_ref, return_dict=False)
        elif cls_name == "DDIMScheduler" and (step_kwargs or {}).get("eta", 0) > 0:
            x_ref = ref.step(mo, t, x_ref, variance_noise=torch.from_numpy(noise.copy()), return_dict=False,
                             **step_kwargs)[0]
        else:
            x_ref = ref.step(mo, t, x_ref, return_dict=False)[0]
        x, state = sampler.step(model_output, x, i, state, noise if sampler.needs_noise else None)
        assert x.dtype == np.float32
        assert_close(x, x_ref.numpy(), f"{cls_name} step {i} (t={int(t)})")
        if cls_name == "CogVideoXDPMScheduler":
            assert_close(state, old.numpy(), f"pred_original_sample at step {i}")
    return sampler, x


# -------------------------------------------------------------------------------- whole runs vs diffusers
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_cogvideox_ddim_run_equals_diffusers(prediction_type):
    # zero terminal SNR makes alpha_bar(999) = 0, where an epsilon prediction cannot give x0 (diffusers: inf)
    kw = dict(COGVIDEOX_KW, prediction_type=prediction_type, rescale_betas_zero_snr=prediction_type != "epsilon")
    run_both("CogVideoXDDIMScheduler", kw, 5)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_cogvideox_dpm_run_with_injected_noise_equals_diffusers(prediction_type, monkeypatch):
    kw = dict(COGVIDEOX_KW, prediction_type=prediction_type, rescale_betas_zero_snr=prediction_type != "epsilon")
    sampler, _ = run_both("CogVideoXDPMScheduler", kw, 5, monkeypatch=monkeypatch)
    assert sampler.needs_noise


def test_cogvideox_dpm_leading_spacing_with_uneven_steps_equals_diffusers(monkeypatch):
    kw = dict(COGVIDEOX_KW, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False)
    run_both("CogVideoXDPMScheduler", kw, 3, monkeypatch=monkeypatch)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_run_equals_diffusers(prediction_type):
    # DDIMScheduler's defaults: linear betas, clip_sample=True, leading spacing
    sampler, _ = run_both("DDIMScheduler", dict(prediction_type=prediction_type), 5)
    assert not sampler.needs_noise and sampler.options["clip_sample"]


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_with_eta_and_injected_variance_noise_equals_diffusers(prediction_type):
    sampler, _ = run_both("DDIMScheduler", dict(prediction_type=prediction_type, clip_sample=False), 5,
                       overrides={"eta": 0.7}, step_kwargs={"eta": 0.7})
    assert sampler.needs_noise


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_ddim_zero_snr_trailing_uneven_steps_equals_diffusers(prediction_type):
    # 3 trailing steps: 999, 666, 332 while diffusers steps to t - 333 (333, -1): prev != next timestep
    kw = dict(prediction_type=prediction_type, rescale_betas_zero_snr=True, timestep_spacing="trailing",
              beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    sampler, _ = run_both("DDIMScheduler", kw, 3)
    assert list(sampler.prev_timesteps) == [666, 333, -1]


def test_ddim_thresholding_run_equals_diffusers():
    run_both("DDIMScheduler", dict(thresholding=True, sample_max_value=2.5), 4)


def test_ddim_clipping_changes_the_result_as_in_diffusers():
    # the first epsilon steps predict |x0| far above 1: with clip_sample they are clamped
    common = dict(prediction_type="epsilon", clip_sample_range=1.5)
    clipped, x_clipped = run_both("DDIMScheduler", dict(common, clip_sample=True), 3)
    unclipped, x_unclipped = run_both("DDIMScheduler", dict(common, clip_sample=False), 3)
    assert clipped.options["clip_sample_range"] == 1.5 and not unclipped.options["clip_sample"]
    assert np.abs(x_clipped).max() <= 1.5 < np.abs(x_unclipped).max()


# ------------------------------------------------------------------------------------- step functions
def test_ddim_step_clip_sample_bounds_x0():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SHAPE, dtype=np.float32)
    eps = 3 * rng.standard_normal(SHAPE, dtype=np.float32)
    a_t, a_prev = np.float32(0.3), np.float32(0.6)
    _, x0 = ddim_step(eps, x, a_t, a_prev, prediction_type="epsilon", clip_sample=True, clip_sample_range=1.2)
    _, raw = ddim_step(eps, x, a_t, a_prev, prediction_type="epsilon")
    assert np.abs(raw).max() > 1.2 and np.abs(x0).max() == np.float32(1.2)
    np.testing.assert_array_equal(x0, np.clip(raw, -1.2, 1.2))


def test_dynamic_threshold_equals_diffusers():
    torch = _torch()
    from diffusers import DDIMScheduler

    rng = np.random.default_rng(2)
    x0 = (rng.standard_normal(SHAPE) * rng.uniform(0.5, 3, (SHAPE[0], 1, 1, 1, 1))).astype(np.float32)
    ref = DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0)
    expected = ref._threshold_sample(torch.from_numpy(x0.copy())).numpy()
    ours = dynamic_threshold(x0, 0.9, 2.0)
    assert_close(ours, expected)
    assert not np.allclose(ours, np.clip(x0, -1, 1))  # some rows have 1 < s < 2: not plain clipping


def test_ddim_eta_without_noise_raises():
    x = np.zeros(SHAPE, np.float32)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, x, np.float32(0.5), np.float32(0.7), prediction_type="epsilon", eta=1.0)


def test_cogvideox_ddim_step_closed_form():
    # v-prediction with v = 0 at alpha_bar = 0.25: x0 = sqrt(a) x = x / 2; stepping to alpha_bar_prev = 1 gives x0
    x = np.full((1, 2), 4.0, np.float32)
    prev, x0 = cogvideox_ddim_step(np.zeros_like(x), x, 0.25, 1.0, prediction_type="v_prediction")
    np.testing.assert_array_equal(x0, np.full((1, 2), 2.0, np.float32))
    np.testing.assert_array_equal(prev, x0)


def test_cogvideox_dpm_first_step_from_pure_noise_ignores_the_sample():
    # alpha_bar_t = 0 (zero terminal SNR): lambda = -inf, e^{-h} = 0, so x_prev = sqrt(a_prev) x0 + noise term
    rng = np.random.default_rng(3)
    x, v, z = (rng.standard_normal((2, 3), dtype=np.float32) for _ in range(3))
    a_prev = 0.5
    prev, x0 = cogvideox_dpm_step(v, x, None, 0.0, a_prev, None, prediction_type="v_prediction", noise=z)
    np.testing.assert_array_equal(x0, -v)
    np.testing.assert_allclose(prev, np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * z, rtol=1e-6)


# --------------------------------------------------------------------------------------------- Sampler
def test_add_noise_equals_diffusers():
    torch = _torch()
    from diffusers import CogVideoXDDIMScheduler, DDIMScheduler

    rng = np.random.default_rng(4)
    x0, z = rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(SHAPE, dtype=np.float32)
    for ref in (CogVideoXDDIMScheduler(**COGVIDEOX_KW), DDIMScheduler()):
        ref.set_timesteps(10)
        sampler = build_sampler(_config(ref), 10)
        for i in (0, 4, 9):
            expected = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(z), ref.timesteps[i:i + 1]).numpy()
            assert_close(sampler.add_noise(x0, z, i), expected, f"{type(ref).__name__} i={i}")


def test_sampler_scale_model_input_is_identity_and_init_sigma_one():
    sampler = build_sampler({"_class_name": "CogVideoXDDIMScheduler", **COGVIDEOX_KW}, 4)
    x = np.ones(SHAPE, np.float32)
    assert sampler.scale_model_input(x, 0) is x and sampler.init_noise_sigma == 1.0


def test_sampler_is_frozen_and_its_tables_read_only():
    sampler = build_sampler({"_class_name": "DDIMScheduler"}, 4)
    with pytest.raises(AttributeError):
        sampler.name = "x"
    with pytest.raises(ValueError):
        sampler.timesteps[0] = 1
    with pytest.raises(TypeError):
        sampler.options["eta"] = 1.0


def test_sampler_step_is_pure():
    sampler = build_sampler({"_class_name": "CogVideoXDPMScheduler", **COGVIDEOX_KW}, 4)
    rng = np.random.default_rng(5)
    x, out, z, old = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(4))
    first = sampler.step(out, x, 2, old, z)
    second = sampler.step(out, x, 2, old, z)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_dpm_sampler_requires_noise_and_index_in_range():
    sampler = build_sampler({"_class_name": "CogVideoXDPMScheduler", **COGVIDEOX_KW}, 4)
    x = np.zeros(SHAPE, np.float32)
    with pytest.raises(ValueError, match="noise"):
        sampler.step(x, x, 0, None, None)
    with pytest.raises(ValueError, match="i=4"):
        sampler.step(x, x, 4, None, x)


def test_config_settings_are_honoured_and_overrides_win():
    config = {"_class_name": "CogVideoXDDIMScheduler", "_diffusers_version": "0.31.0", **COGVIDEOX_KW,
              "some_other_class_key": 1}  # unknown config keys are ignored, as diffusers does
    sampler = build_sampler(config, 50, {"prediction_type": "epsilon", "timestep_spacing": "leading"})
    assert isinstance(sampler, Sampler) and sampler.name == "CogVideoXDDIMScheduler"
    assert sampler.options["prediction_type"] == "epsilon"
    assert sampler.timesteps[0] == 980 and sampler.schedule.alphas_cumprod[-1] == 0.0
    assert build_sampler(config, 50, name="CogVideoXDPMScheduler").name == "CogVideoXDPMScheduler"


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_scheduler_name_raises_listing_names():
    with pytest.raises(ValueError, match=r"'EulerScheduler'.*CogVideoXDDIMScheduler.*DDIMScheduler"):
        validate_scheduler("EulerScheduler")
    with pytest.raises(ValueError, match="EulerScheduler"):
        build_sampler({"_class_name": "EulerScheduler"}, 4)
    with pytest.raises(ValueError, match="_class_name"):
        build_sampler({}, 4)


def test_unknown_override_key_raises_listing_keys():
    with pytest.raises(ValueError, match=r"'etta'.*'eta'"):
        validate_scheduler("DDIMScheduler", {"etta": 0.5})
    with pytest.raises(ValueError, match=r"'eta'.*snr_shift_scale"):
        build_sampler({"_class_name": "CogVideoXDDIMScheduler"}, 4, {"eta": 0.5})


def test_override_that_diffusers_ignores_raises():
    with pytest.raises(ValueError, match="'clip_sample' has no effect"):
        validate_scheduler("CogVideoXDPMScheduler", {"clip_sample": True})


def test_bad_values_raise():
    with pytest.raises(ValueError, match="timestep_spacing='even'"):
        validate_scheduler("DDIMScheduler", {"timestep_spacing": "even"})
    with pytest.raises(ValueError, match="prediction_type='flow'"):
        validate_scheduler("CogVideoXDDIMScheduler", {"prediction_type": "flow"})
    with pytest.raises(ValueError, match="beta_schedule='cosine'"):
        build_sampler({"_class_name": "DDIMScheduler", "beta_schedule": "cosine"}, 4)
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        build_sampler({"_class_name": "DDIMScheduler"}, 0)


def test_registry_defaults_are_diffusers_defaults():
    _torch()
    import inspect

    import diffusers

    # keys that are not constructor arguments: step() arguments (DDIM's eta, Euler's churn), and the Karras range
    # that DPMSolverMultistepScheduler reads from its config when present (hasattr(self.config, "sigma_min"))
    extra = {"eta", "s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max"}
    for name, defaults in SCHEDULERS.items():
        params = inspect.signature(getattr(diffusers, name).__init__).parameters
        ctor = {k: p.default for k, p in params.items() if k != "self"}
        step_only = set(defaults) - set(ctor)
        assert step_only <= extra, name
        assert {k: defaults[k] for k in ctor} == ctor, name
        step_params = inspect.signature(getattr(diffusers, name).step).parameters
        for k in step_only & {"eta", "s_churn", "s_tmin", "s_tmax", "s_noise"}:
            assert defaults[k] == step_params[k].default, (name, k)
