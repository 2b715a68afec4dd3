"""Samplers for the UNet families (Stable Video Diffusion, AnimateDiff, SD-style checkpoints) against diffusers:
EulerDiscrete (incl. SVD's Karras / v-prediction / continuous-timestep config), EulerAncestralDiscrete,
DPMSolverMultistep (DPM++ 2M and variants), LCM, PNDM (PLMS and PRK), and DDIM with SD-style configs.

Each run builds diffusers' scheduler and our Sampler from the same scheduler_config dict, compares the tables
(timesteps, sigmas, init_noise_sigma), then chains every step with a stand-in network whose output depends on its
input (``0.1 * input + fixed random``), comparing the network input (scale_model_input) and x after every step.
Stochastic steps get the same noise on both sides (diffusers' ``randn_tensor`` is replaced in the scheduler's
module).

Tolerance: relative 2e-6 of the largest |x| going into or out of that step (x up to ~700 for SVD's init noise,
~4096 for a zero-terminal-SNR table, whose first step cancels down to ~10). The step arithmetic
is float32 on both sides in the same order, but torch's CPU float32 sqrt / log are not correctly rounded (about
20% of results are 1 ulp off numpy's), so scalar coefficients differ by an ulp now and then; timesteps and sigmas
derived through them get rtol 1e-6 (integer timesteps and the Karras table itself are compared exactly).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from toolkit import schedules as S
from toolkit.samplers import SCHEDULERS, PNDMState, build_sampler, dpm_solver_pp_update, validate_scheduler
from toolkit.sampling import randn, sample

SHAPE = (1, 4, 3, 4, 5)  # [B, C, F, H, W], as the video UNets lay out latents
RTOL = 2e-6

# scheduler/scheduler_config.json of the real checkpoints (keys their class does not know are ignored)
SVD = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
       "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
       "prediction_type": "v_prediction", "set_alpha_to_one": False, "sigma_max": 700.0, "sigma_min": 0.002,
       "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous",
       "trained_betas": None, "use_karras_sigmas": True}
SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "trained_betas": None}
# AnimateDiff's documented DDIM setup: DDIMScheduler.from_pretrained(sd15, subfolder="scheduler", clip_sample=False,
# timestep_spacing="linspace", beta_schedule="linear", steps_offset=1)
ANIMATEDIFF_DDIM = dict(SD15, _class_name="DDIMScheduler", beta_schedule="linear", timestep_spacing="linspace")
LCM = {"_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
       "clip_sample": False, "num_train_timesteps": 1000, "original_inference_steps": 50, "prediction_type": "epsilon",
       "set_alpha_to_one": True, "steps_offset": 1, "timestep_scaling": 10.0, "timestep_spacing": "leading"}


def _diffusers():
    pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
    return pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")


def _torch():
    _diffusers()
    import torch

    return torch


def assert_close(ours, ref, what="", scale=0.0):
    """Equal to RTOL relative to the largest |value| involved (``scale``: the step's input, whose float32
    rounding carries into an output that cancels down to a smaller size)."""
    ref = np.asarray(ref)
    assert np.all(np.isfinite(ref)), what
    atol = RTOL * max(np.abs(ref).max(), scale)
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=atol, err_msg=what)


def reference(name, config, n, overrides=None):
    """diffusers' scheduler as a pipeline makes it: ``Class.from_config(config, **overrides)``, set to n steps."""
    diffusers = _diffusers()
    ref = getattr(diffusers, name).from_config(dict(config), **(overrides or {}))
    ref.set_timesteps(n)
    return ref


def assert_tables_equal(sampler, ref):
    expected = ref.timesteps.numpy()
    assert sampler.timesteps.dtype == expected.dtype
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(sampler.timesteps, expected)
    else:  # fractional timesteps come from float32 logs / square roots (see the module docstring)
        np.testing.assert_allclose(sampler.timesteps, expected, rtol=1e-6, atol=1e-6)
    if hasattr(ref, "sigmas"):
        assert sampler.sigmas.dtype == np.float32
        np.testing.assert_allclose(sampler.sigmas, ref.sigmas.numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(sampler.init_noise_sigma, float(ref.init_noise_sigma), rtol=1e-6)


def run_both(name, config, n, overrides=None, monkeypatch=None, seed=0, carry_error=False):
    """Chain all steps of diffusers' scheduler and of our Sampler on the same stand-in network and noises.

    ``carry_error``: compare relative to the largest |x| seen so far in the run, for tables whose first step
    cancels a huge x down to a small one (the float32 rounding of that cancellation stays in x)."""
    torch = _torch()
    ref = reference(name, config, n, overrides)
    sampler = build_sampler(config, n, overrides, name=name)
    assert_tables_equal(sampler, ref)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(SHAPE, dtype=np.float32) * np.float32(sampler.init_noise_sigma)).astype(np.float32)
    x_ref = torch.from_numpy(x.copy())
    current = {}
    if monkeypatch is not None:
        module = sys.modules[type(ref).__module__]
        monkeypatch.setattr(module, "randn_tensor", lambda *a, **k: torch.from_numpy(current["noise"].copy()))
    state, denoised, seen = None, None, 0.0
    for i, t in enumerate(ref.timesteps):
        seen = max(seen, float(np.abs(x).max())) if carry_error else 0.0
        base = rng.standard_normal(SHAPE, dtype=np.float32)
        current["noise"] = rng.standard_normal(SHAPE, dtype=np.float32)
        inp_ref = ref.scale_model_input(x_ref, t)
        inp = sampler.scale_model_input(x, i)
        assert_close(inp, inp_ref.numpy(), f"{name} model input at step {i}", seen)
        out_ref = 0.1 * inp_ref + torch.from_numpy(base)
        out = np.float32(0.1) * inp + base
        result = ref.step(out_ref, t, x_ref, return_dict=False)
        x_ref = result[0]
        if name == "LCMScheduler":
            denoised = result[1]
        scale = max(seen, float(np.abs(x).max()))
        x, state = sampler.step(out, x, i, state, current["noise"] if sampler.needs_noise else None)
        assert x.dtype == np.float32
        assert_close(x, x_ref.numpy(), f"{name} x after step {i} (t={t.item()})", scale)
    return sampler, x, denoised


# ------------------------------------------------------------------------------------------- tables
TABLE_CASES = {
    "euler_sd15": ("EulerDiscreteScheduler", SD15, {}),
    "euler_karras": ("EulerDiscreteScheduler", SD15, {"use_karras_sigmas": True}),
    "euler_leading": ("EulerDiscreteScheduler", SD15, {"timestep_spacing": "leading"}),
    "euler_svd": ("EulerDiscreteScheduler", SVD, {}),
    "euler_log_linear_trailing": ("EulerDiscreteScheduler", SD15, {"interpolation_type": "log_linear",
                                                                   "timestep_spacing": "trailing"}),
    "euler_ancestral_trailing": ("EulerAncestralDiscreteScheduler", SD15, {"timestep_spacing": "trailing"}),
    "dpm": ("DPMSolverMultistepScheduler", SD15, {}),
    "dpm_karras": ("DPMSolverMultistepScheduler", SD15, {"use_karras_sigmas": True}),
    "dpm_leading": ("DPMSolverMultistepScheduler", SD15, {"timestep_spacing": "leading"}),
    "dpm_trailing": ("DPMSolverMultistepScheduler", SD15, {"timestep_spacing": "trailing"}),
    "lcm": ("LCMScheduler", LCM, {}),
    "pndm_plms": ("PNDMScheduler", SD15, {}),
    "pndm_prk": ("PNDMScheduler", SD15, {"skip_prk_steps": False}),
    "pndm_plms_trailing": ("PNDMScheduler", SD15, {"timestep_spacing": "trailing"}),
}


@pytest.mark.parametrize("case", TABLE_CASES)
def test_tables_equal_diffusers(case):
    name, config, overrides = TABLE_CASES[case]
    for n in ((4, 7, 50) if case == "pndm_prk" else (1, 2, 3, 7, 50)):
        assert_tables_equal(build_sampler(config, n, overrides, name=name), reference(name, config, n, overrides))


# ------------------------------------------------------------------------------ Stable Video Diffusion
def test_svd_karras_sigma_table_pinned():
    sampler = build_sampler(SVD, 25)
    assert sampler.sigmas.dtype == np.float32 and sampler.sigmas.shape == (26,)
    np.testing.assert_array_equal(sampler.sigmas[[0, 1, 2, 12, 23, 24, 25]], np.array(
        [700.0, 545.729248046875, 421.5691223144531, 15.589967727661133, 0.007882495410740376,
         0.0020000000949949026, 0.0], dtype=np.float32))
    # continuous timesteps: the network sees c_noise = log(sigma) / 4 (Karras et al. 2022, Table 1)
    np.testing.assert_allclose(sampler.timesteps[[0, 1, 12, 24]],
                               [1.6377700567245483, 1.575530767440796, 0.6866568922996521, -1.553652048110962],
                               rtol=1e-6)
    assert sampler.init_noise_sigma == np.float32(700.000732421875)  # sqrt(700^2 + 1): "leading" spacing


@pytest.mark.parametrize("n", [1, 4, 25])
def test_svd_euler_tables_equal_diffusers(n):
    sampler = build_sampler(SVD, n)
    assert_tables_equal(sampler, reference("EulerDiscreteScheduler", SVD, n))
    assert sampler.timesteps.dtype == np.float32 and not sampler.needs_noise


def test_svd_euler_run_equals_diffusers():
    run_both("EulerDiscreteScheduler", SVD, 5)


def test_svd_euler_network_input_is_edm_c_in():
    sampler = build_sampler(SVD, 5)
    x = np.ones(SHAPE, np.float32)
    for i in (0, 4):
        s = np.float64(sampler.sigmas[i])
        np.testing.assert_allclose(sampler.scale_model_input(x, i), 1 / np.sqrt(s * s + 1), rtol=1e-6)


def test_svd_euler_sampling_loop_with_an_oracle_denoiser_lands_on_the_data():
    # a network that knows x0: from its input x / sqrt(sigma^2 + 1) and t = log(sigma) / 4 it returns the v that
    # makes the step's x0 prediction exactly x0; the last Euler step (to sigma = 0) then lands on x0
    x0 = np.random.default_rng(11).standard_normal(SHAPE, dtype=np.float32)
    sampler = build_sampler(SVD, 6)

    def oracle(inp, t, i):
        sigma = np.exp(4 * np.float64(t))
        c = np.sqrt(sigma ** 2 + 1)
        x = inp * c
        return ((x / c ** 2 - x0) * c / sigma).astype(np.float32)

    x = randn(np.random.default_rng(12), SHAPE) * np.float32(sampler.init_noise_sigma)
    out = sample(oracle, x, sampler, progress=False)
    np.testing.assert_allclose(out, x0, rtol=0, atol=1e-6)  # the last step is x0 up to float32 rounding


# -------------------------------------------------------------------------------------- Euler variants
SD15_EULER_VARIANTS = {
    "sd15": {},  # linspace spacing: fractional timesteps such as 749.25
    "karras_discrete": {"use_karras_sigmas": True},  # timesteps interpolated from log sigma
    "leading_v_prediction": {"timestep_spacing": "leading", "prediction_type": "v_prediction"},
    "trailing_sample_final_sigma_min": {"timestep_spacing": "trailing", "prediction_type": "sample",
                                        "final_sigmas_type": "sigma_min"},
    "log_linear": {"interpolation_type": "log_linear"},
    "zero_snr_trailing_v": {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                            "prediction_type": "v_prediction"},
}


@pytest.mark.parametrize("variant", SD15_EULER_VARIANTS)
def test_euler_run_equals_diffusers(variant):
    # zero terminal SNR: sigma_max = 4096 (alpha_bar_T = 2^-24), x ~ 4096 z cancels to ~10 in the first step
    run_both("EulerDiscreteScheduler", SD15, 5, SD15_EULER_VARIANTS[variant], carry_error="zero_snr" in variant)


def test_euler_churn_with_injected_noise_equals_diffusers(monkeypatch):
    # s_churn is a step() argument in diffusers: the reference gets it through a wrapped step
    diffusers = _diffusers()
    churn = {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 5.0, "s_noise": 1.003}
    step = diffusers.EulerDiscreteScheduler.step
    monkeypatch.setattr(diffusers.EulerDiscreteScheduler, "step", lambda self, *a, **k: step(self, *a, **churn, **k))
    sampler, _, _ = run_both("EulerDiscreteScheduler", SD15, 6, churn, monkeypatch=monkeypatch)
    assert sampler.needs_noise
    assert sampler.sigmas[5] < 0.5 <= sampler.sigmas[3] <= 5.0 < sampler.sigmas[0]  # some steps churn, some not


@pytest.mark.parametrize("overrides", [{}, {"prediction_type": "v_prediction", "timestep_spacing": "leading"}])
def test_euler_ancestral_run_with_injected_noise_equals_diffusers(overrides, monkeypatch):
    sampler, _, _ = run_both("EulerAncestralDiscreteScheduler", SD15, 5, overrides, monkeypatch=monkeypatch)
    assert sampler.needs_noise


def test_euler_add_noise_equals_diffusers():
    torch = _torch()
    ref = reference("EulerDiscreteScheduler", SVD, 6)
    sampler = build_sampler(SVD, 6)
    rng = np.random.default_rng(4)
    x0, z = rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(SHAPE, dtype=np.float32)
    for i in (0, 3):
        expected = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(z), ref.timesteps[i:i + 1]).numpy()
        assert_close(sampler.add_noise(x0, z, i), expected, f"i={i}")


# --------------------------------------------------------------------------------------- DPM-Solver++
DPM_VARIANTS = {
    "2m": ({}, 6),
    "2m_karras": ({"use_karras_sigmas": True}, 6),
    "2m_karras_v_leading": ({"use_karras_sigmas": True, "prediction_type": "v_prediction",
                             "timestep_spacing": "leading"}, 5),
    "2m_heun_sample_trailing": ({"solver_type": "heun", "prediction_type": "sample",
                                 "timestep_spacing": "trailing"}, 5),
    "3m": ({"solver_order": 3}, 6),
    "1s": ({"solver_order": 1}, 4),
    # 16 steps: no lower-order ending, the last step is 2nd order down to sigma_min
    "2m_final_sigma_min_16_steps": ({"final_sigmas_type": "sigma_min"}, 16),
    "2m_thresholding": ({"thresholding": True, "sample_max_value": 1.5}, 5),
    "2m_lambda_min_clipped": ({"lambda_min_clipped": -3.0}, 5),
}


@pytest.mark.parametrize("variant", DPM_VARIANTS)
def test_dpm_solver_run_equals_diffusers(variant):
    overrides, n = DPM_VARIANTS[variant]
    sampler, _, _ = run_both("DPMSolverMultistepScheduler", SD15, n, overrides)
    assert not sampler.needs_noise and sampler.init_noise_sigma == 1.0


@pytest.mark.parametrize("solver_order", [2, 3])
def test_sde_dpm_solver_run_with_injected_noise_equals_diffusers(solver_order, monkeypatch):
    sampler, _, _ = run_both("DPMSolverMultistepScheduler", SD15, 5,
                             {"algorithm_type": "sde-dpmsolver++", "solver_order": solver_order},
                             monkeypatch=monkeypatch)
    assert sampler.needs_noise


def test_dpm_solver_karras_reads_sigma_range_from_config_as_diffusers():
    # diffusers' Karras conversion looks sigma_min / sigma_max up on the config even for this class
    sampler = build_sampler(SVD, 5, {"use_karras_sigmas": True}, name="DPMSolverMultistepScheduler")
    assert sampler.sigmas[0] == np.float32(700.0) and sampler.sigmas[-2] == np.float32(0.002)
    assert_tables_equal(sampler, reference("DPMSolverMultistepScheduler", SVD, 5, {"use_karras_sigmas": True}))


def test_dpm_solver_history_is_explicit_state():
    sampler = build_sampler(SD15, 6, name="DPMSolverMultistepScheduler")
    rng = np.random.default_rng(5)
    x, out = rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(SHAPE, dtype=np.float32)
    x1, state = sampler.step(out, x, 0, None)
    assert isinstance(state, tuple) and len(state) == 1  # 2M keeps one earlier data prediction
    a, state_a = sampler.step(out, x1, 1, state)
    b, state_b = sampler.step(out, x1, 1, state)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(state_a[0], state_b[0])
    other_history, _ = sampler.step(out, x1, 1, (state[0] + 1,))
    assert not np.allclose(other_history, a, atol=1e-3)  # the second-order term reads the history


def test_dpm_solver_first_order_to_zero_sigma_returns_the_data_prediction():
    x0 = np.random.default_rng(6).standard_normal(SHAPE, dtype=np.float32)
    out = dpm_solver_pp_update([x0], [np.float32(3.0)], np.float32(0.0), np.ones(SHAPE, np.float32))
    np.testing.assert_array_equal(out, x0)


def test_dpm_solver_add_noise_equals_diffusers():
    torch = _torch()
    ref = reference("DPMSolverMultistepScheduler", SD15, 6, {"use_karras_sigmas": True})
    sampler = build_sampler(SD15, 6, {"use_karras_sigmas": True}, name="DPMSolverMultistepScheduler")
    rng = np.random.default_rng(7)
    x0, z = rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(SHAPE, dtype=np.float32)
    for i in (0, 4):
        expected = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(z), ref.timesteps[i:i + 1]).numpy()
        assert_close(sampler.add_noise(x0, z, i), expected, f"i={i}")


# ------------------------------------------------------------------------------------------------ LCM
def test_lcm_timesteps_pinned():
    assert list(S.lcm_timesteps(4, 1000, 50)) == [999, 759, 499, 259]
    assert list(S.lcm_timesteps(1, 1000, 50)) == [999]


@pytest.mark.parametrize("overrides", [{}, {"prediction_type": "v_prediction", "clip_sample": True}])
def test_lcm_run_with_injected_noise_equals_diffusers_and_ends_on_denoised(overrides, monkeypatch):
    sampler, x, denoised = run_both("LCMScheduler", LCM, 4, overrides, monkeypatch=monkeypatch)
    assert sampler.needs_noise
    # LCM pipelines decode `denoised` of the last step; our final x is that sample
    assert_close(x, denoised.numpy(), "final x vs diffusers' denoised")


def test_lcm_more_steps_than_distillation_schedule_raises():
    with pytest.raises(ValueError, match="num_inference_steps=8.*original_inference_steps=4"):
        build_sampler(LCM, 8, {"original_inference_steps": 4})


def test_sampling_loop_with_stochastic_samplers_equals_diffusers_loop(monkeypatch):
    """toolkit.sampling.sample (noise drawn from the run's generator at every step) against diffusers' pipeline
    loop fed the same noises in the same order."""
    torch = _torch()
    for name, config in (("LCMScheduler", LCM), ("EulerAncestralDiscreteScheduler", SD15)):
        ref = reference(name, config, 4)
        sampler = build_sampler(config, 4, name=name)
        base = np.random.default_rng(8).standard_normal((4, *SHAPE), dtype=np.float32)
        x = randn(np.random.default_rng(9), SHAPE) * np.float32(sampler.init_noise_sigma)
        ours = sample(lambda inp, t, i: np.float32(0.1) * inp + base[i], x, sampler, rng=np.random.default_rng(10),
                      progress=False)
        noise_rng = np.random.default_rng(10)
        current = {}
        monkeypatch.setattr(sys.modules[type(ref).__module__], "randn_tensor",
                            lambda *a, **k: torch.from_numpy(current["noise"]))
        x_ref = torch.from_numpy(x.copy())
        for i, t in enumerate(ref.timesteps):
            current["noise"] = randn(noise_rng, SHAPE)  # the loop draws one per step, used or not
            out = 0.1 * ref.scale_model_input(x_ref, t) + torch.from_numpy(base[i])
            x_ref = ref.step(out, t, x_ref, return_dict=False)[0]
        assert_close(ours, x_ref.numpy(), name)


# ----------------------------------------------------------------------------------------------- PNDM
def test_pndm_plms_timesteps_repeat_the_second_point():
    ts, prk = S.pndm_timesteps(5, 1000, "leading", 1, skip_prk_steps=True)
    assert list(ts) == [801, 601, 601, 401, 201, 1] and prk == 0


@pytest.mark.parametrize("overrides,n", [({}, 5), ({"prediction_type": "v_prediction"}, 6),
                                         ({"timestep_spacing": "linspace"}, 4)])
def test_pndm_plms_run_equals_diffusers(overrides, n):
    sampler, _, _ = run_both("PNDMScheduler", SD15, n, overrides)
    assert sampler.num_steps == n + 1 and not sampler.needs_noise


def test_pndm_prk_run_equals_diffusers():
    # skip_prk_steps=False (the class default): 12 Runge-Kutta evaluations, then PLMS
    sampler, _, _ = run_both("PNDMScheduler", SD15, 6, {"skip_prk_steps": False})
    assert sampler.num_steps == 6 + 9 and sampler.options["prk_steps"] == 12


def test_pndm_runge_kutta_start_with_too_few_steps_raises():
    # diffusers fails inside numpy here (operands could not be broadcast)
    with pytest.raises(ValueError, match="num_inference_steps=3.*skip_prk_steps"):
        build_sampler(SD15, 3, {"skip_prk_steps": False})


def test_pndm_state_carries_eps_history():
    sampler = build_sampler(SD15, 5)
    x = np.zeros(SHAPE, np.float32)
    state = None
    for i in range(4):
        x, state = sampler.step(np.full(SHAPE, i, np.float32), x, i, state)
    assert isinstance(state, PNDMState)
    assert [float(e.flat[0]) for e in state.ets] == [0.0, 2.0, 3.0]  # step 1 (the repeat) is not kept


# -------------------------------------------------------------------------------- DDIM, SD-style configs
@pytest.mark.parametrize("config", [SD15, ANIMATEDIFF_DDIM], ids=["sd15", "animatediff"])
def test_ddim_with_sd_style_config_equals_diffusers(config):
    run_both("DDIMScheduler", config, 5)


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_scheduler_lists_the_new_names():
    with pytest.raises(ValueError, match=r"'HeunDiscreteScheduler'.*DPMSolverMultistepScheduler.*"
                                         r"EulerAncestralDiscreteScheduler.*EulerDiscreteScheduler.*LCMScheduler"
                                         r".*PNDMScheduler"):
        validate_scheduler("HeunDiscreteScheduler")


def test_unknown_key_lists_the_class_keys():
    with pytest.raises(ValueError, match=r"'use_karas_sigmas'.*'use_karras_sigmas'"):
        validate_scheduler("EulerDiscreteScheduler", {"use_karas_sigmas": True})
    with pytest.raises(ValueError, match=r"'use_karras_sigmas'.*'original_inference_steps'"):
        validate_scheduler("LCMScheduler", {"use_karras_sigmas": True})


@pytest.mark.parametrize("name,key,value", [
    ("DPMSolverMultistepScheduler", "algorithm_type", "dpmsolver"),
    ("DPMSolverMultistepScheduler", "solver_order", 4),
    ("EulerDiscreteScheduler", "timestep_type", "integer"),
    ("EulerDiscreteScheduler", "final_sigmas_type", "one"),
    ("EulerAncestralDiscreteScheduler", "prediction_type", "sample"),
    ("PNDMScheduler", "prediction_type", "sample"),
])
def test_bad_choice_raises_listing_the_allowed_values(name, key, value):
    with pytest.raises(ValueError, match=rf"{key}={value!r}.*choose one of"):
        validate_scheduler(name, {key: value})


def test_unsupported_option_raises_unless_default():
    with pytest.raises(ValueError, match="use_lu_lambdas=True is not supported"):
        build_sampler(dict(SD15, use_lu_lambdas=True), 4, name="DPMSolverMultistepScheduler")
    with pytest.raises(ValueError, match="variance_type='learned_range' is not supported"):
        validate_scheduler("DPMSolverMultistepScheduler", {"variance_type": "learned_range"})
    build_sampler(dict(SD15, use_lu_lambdas=False, variance_type=None), 4, name="DPMSolverMultistepScheduler")


def test_lcm_spacing_override_has_no_effect_and_is_refused():
    with pytest.raises(ValueError, match="'timestep_spacing' has no effect"):
        validate_scheduler("LCMScheduler", {"timestep_spacing": "trailing"})


def test_every_new_scheduler_is_registered():
    assert {"EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
            "LCMScheduler", "PNDMScheduler"} <= set(SCHEDULERS)


def test_scheduler_config_files_name_registered_classes():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf" / "scheduler"
    names = {p.stem: yaml.safe_load(p.read_text())["name"] for p in conf.glob("*.yaml")}
    assert {"euler", "euler_ancestral", "dpmpp_2m", "lcm", "pndm"} <= set(names)
    for stem, name in names.items():
        assert name is None or name in SCHEDULERS, stem
        cfg = yaml.safe_load((conf / f"{stem}.yaml").read_text())
        if name is not None:
            validate_scheduler(name, {k: v for k, v in cfg.items() if k != "name" and v is not None})
