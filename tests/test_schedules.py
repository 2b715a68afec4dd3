"""Schedule tables: timesteps and alpha_bar equal diffusers' (DDIMScheduler, CogVideoX schedulers).

Pinned numbers were read from diffusers 0.42.1 / torch; the parity tests recompute them live."""
from __future__ import annotations

import numpy as np
import pytest

from toolkit import schedules as S

COGVIDEOX_KW = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    rescale_betas_zero_snr=True, set_alpha_to_one=True, snr_shift_scale=3.0)  # the real checkpoints'


def _diffusers():
    pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
    return pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")


# ---------------------------------------------------------------------------------------- timesteps
@pytest.mark.parametrize("spacing", S.TIMESTEP_SPACINGS)
@pytest.mark.parametrize("steps_offset", [0, 1])
@pytest.mark.parametrize("num_train", [1000, 100])
def test_timesteps_equal_diffusers_set_timesteps(spacing, steps_offset, num_train):
    diffusers = _diffusers()
    for n in [1, 3, 4, 7, 25, 50, 99, 100]:
        ref = diffusers.DDIMScheduler(num_train_timesteps=num_train, timestep_spacing=spacing, steps_offset=steps_offset)
        ref.set_timesteps(n)
        ours = S.inference_timesteps(n, num_train, spacing, steps_offset)
        np.testing.assert_array_equal(ours, ref.timesteps.numpy(), err_msg=f"{spacing} n={n}")
        assert ours.dtype == np.int64


def test_cogvideox_timesteps_equal_diffusers():
    diffusers = _diffusers()
    ref = diffusers.CogVideoXDPMScheduler(**COGVIDEOX_KW, timestep_spacing="trailing")
    ref.set_timesteps(50)
    np.testing.assert_array_equal(S.inference_timesteps(50, 1000, "trailing"), ref.timesteps.numpy())


def test_pinned_timesteps():
    ts = S.inference_timesteps(50, 1000, "trailing")
    assert list(ts[:3]) == [999, 979, 959] and list(ts[-3:]) == [59, 39, 19]
    ts = S.inference_timesteps(50, 1000, "leading", steps_offset=1)
    assert list(ts[:3]) == [981, 961, 941] and list(ts[-3:]) == [41, 21, 1]
    assert list(S.inference_timesteps(4, 1000, "linspace")) == [999, 666, 333, 0]
    assert list(S.inference_timesteps(3, 1000, "trailing")) == [999, 666, 332]


def test_steps_offset_only_shifts_leading_spacing():
    for spacing in ("trailing", "linspace"):
        np.testing.assert_array_equal(S.inference_timesteps(10, 1000, spacing, 1), S.inference_timesteps(10, 1000, spacing, 0))


def test_unknown_spacing_and_too_many_steps_raise():
    with pytest.raises(ValueError, match="'uniform'.*leading"):
        S.inference_timesteps(10, 1000, "uniform")
    with pytest.raises(ValueError, match="num_inference_steps=1001"):
        S.inference_timesteps(1001, 1000, "leading")


# -------------------------------------------------------------------------------------------- betas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_linspace_is_bit_identical_to_torch(dtype):
    _diffusers()
    import torch

    tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    for start, end, n in [(0.0001, 0.02, 1000), (0.00085 ** 0.5, 0.012 ** 0.5, 1000), (1.0, 3.0, 14), (2.0, 2.0, 1)]:
        np.testing.assert_array_equal(S.torch_linspace(start, end, n, dtype), torch.linspace(start, end, n, dtype=tdt).numpy())


DDIM_TABLES = {
    "linear": dict(),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
    "linear_zero_snr": dict(rescale_betas_zero_snr=True),
    "scaled_linear_zero_snr_no_alpha_one": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                                rescale_betas_zero_snr=True, set_alpha_to_one=False),
    "trained_betas": dict(trained_betas=list(np.linspace(0.001, 0.03, 50)), num_train_timesteps=50),
}


@pytest.mark.parametrize("name", DDIM_TABLES)
def test_ddim_table_equals_diffusers(name):
    diffusers = _diffusers()
    kw = DDIM_TABLES[name]
    ref = diffusers.DDIMScheduler(**kw)
    ours = S.ddim_noise_schedule(**kw)
    assert ours.alphas_cumprod.dtype == np.float32
    if "zero_snr" in name:
        # the rescaling takes float32 square roots, and torch's CPU float32 sqrt is not correctly rounded
        # (about 20% of results are 1 ulp off numpy's); alpha_bar then differs by a few ulp
        np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=1e-6, atol=1e-8)
        # betas = 1 - alpha_bar[i] / alpha_bar[i-1]: those ulps of alpha (~6e-8 near 1) show up absolutely
        np.testing.assert_allclose(ours.betas, ref.betas.numpy(), rtol=0, atol=3e-6)
    else:
        np.testing.assert_array_equal(ours.alphas_cumprod, ref.alphas_cumprod.numpy())
        np.testing.assert_array_equal(ours.betas, ref.betas.numpy())
    assert ours.final_alpha_cumprod == ref.final_alpha_cumprod.item()


COGVIDEOX_TABLES = {
    "checkpoint": COGVIDEOX_KW,
    "defaults": dict(),
    "linear_float32_shift_2.7": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                                     rescale_betas_zero_snr=True, snr_shift_scale=2.7),
    "cosine_no_shift_no_alpha_one": dict(beta_schedule="squaredcos_cap_v2", snr_shift_scale=1.0, set_alpha_to_one=False),
}


@pytest.mark.parametrize("name", COGVIDEOX_TABLES)
def test_cogvideox_table_equals_diffusers(name):
    diffusers = _diffusers()
    kw = COGVIDEOX_TABLES[name]
    ref = diffusers.CogVideoXDDIMScheduler(**kw)
    ours = S.cogvideox_noise_schedule(**kw)
    expected = ref.alphas_cumprod.numpy()
    assert ours.alphas_cumprod.dtype == expected.dtype  # float64 for scaled_linear, float32 otherwise
    # torch's CPU sqrt is not correctly rounded (see above): a few ulp where zero-SNR rescaling takes roots
    rtol = 1e-6 if expected.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(ours.alphas_cumprod, expected, rtol=rtol, atol=rtol * 1e-2)
    assert ours.final_alpha_cumprod == ref.final_alpha_cumprod.item()


def test_pinned_alphas_cumprod():
    cog = S.cogvideox_noise_schedule(**COGVIDEOX_KW)
    np.testing.assert_allclose(cog.alphas_cumprod[[0, 1, 500, 998]],
                               [0.9974543276430069, 0.9948006264269799, 0.09532810086292638, 6.230788467394798e-08],
                               rtol=1e-13)
    assert cog.alphas_cumprod[999] == 0.0
    ddim = S.ddim_noise_schedule()
    assert ddim.alphas_cumprod[0] == np.float32(0.9998999834060669)
    assert ddim.alphas_cumprod[500] == np.float32(0.07779665291309357)
    assert ddim.alphas_cumprod[999] == np.float32(4.035830352222547e-05)
    sd = S.ddim_noise_schedule(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert sd.alphas_cumprod[999] == np.float32(0.00466009508818388)


# ----------------------------------------------------------------------------------- properties
def test_zero_terminal_snr_rescaling_keeps_first_and_zeroes_last():
    betas = S.scaled_linear_betas(0.00085, 0.012, 1000, np.float64)
    acp = S.alphas_cumprod(betas)
    rescaled = S.rescale_zero_terminal_snr_alphas_cumprod(acp)
    assert rescaled[-1] == 0.0
    np.testing.assert_allclose(rescaled[0], acp[0], rtol=1e-15)
    assert np.all(np.diff(rescaled) < 0)
    acp_from_betas = S.alphas_cumprod(S.rescale_zero_terminal_snr(betas))
    np.testing.assert_allclose(acp_from_betas, rescaled, rtol=1e-9, atol=1e-15)


def test_snr_shift_divides_snr_by_the_scale():
    acp = S.alphas_cumprod(S.linear_betas(0.0001, 0.02, 1000, np.float64))
    shifted = S.shift_snr(acp, 3.0)
    np.testing.assert_allclose(shifted / (1 - shifted), acp / (1 - acp) / 3.0, rtol=1e-12)


def test_final_alpha_cumprod_is_one_or_first_entry():
    assert S.cogvideox_noise_schedule(set_alpha_to_one=True).final_alpha_cumprod == 1.0
    sch = S.cogvideox_noise_schedule(set_alpha_to_one=False)
    assert sch.final_alpha_cumprod == sch.alphas_cumprod[0]
    assert sch.alpha_bar(-1) == sch.alphas_cumprod[0] and sch.alpha_bar(3) == sch.alphas_cumprod[3]


def test_tables_are_immutable():
    sch = S.ddim_noise_schedule()
    with pytest.raises(ValueError):
        sch.alphas_cumprod[0] = 0.5
    with pytest.raises(ValueError):
        S.inference_timesteps(4)[0] = 3
    with pytest.raises(AttributeError):
        sch.alphas_cumprod = np.zeros(3)


def test_unknown_beta_schedule_raises():
    with pytest.raises(ValueError, match="'cosine'.*scaled_linear"):
        S.make_betas("cosine", 0.1, 0.2, 10)


# ------------------------------------------------------------------------------------ sigma tables
SD_KW = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def test_karras_sigmas_pinned_for_stable_video_diffusion():
    # SVD's scheduler config: sigma_min=0.002, sigma_max=700, rho=7 (Karras et al. 2022, Eq. 5)
    k = S.karras_sigmas(0.002, 700.0, 25)
    assert k.shape == (25,) and k.dtype == np.float64
    np.testing.assert_allclose(k[[0, 1, 12, 23, 24]], [700.0, 545.7292461673019, 15.58996779996998,
                                                      0.007882495646757554, 0.002], rtol=1e-12)
    assert np.all(np.diff(k) < 0)


def test_vp_sigmas_equal_diffusers_and_are_pinned():
    diffusers = _diffusers()
    sigmas = S.vp_sigmas(S.sigma_noise_schedule(**SD_KW).alphas_cumprod)
    assert sigmas.dtype == np.float32
    assert sigmas[0] == np.float32(0.029167532920837402) and sigmas[999] == np.float32(14.614646911621094)
    ref = diffusers.DPMSolverMultistepScheduler(**SD_KW).sigmas.numpy()
    # torch's CPU float32 sqrt is an approximation (1 ulp off in ~20% of cases); ours is correctly rounded
    np.testing.assert_allclose(sigmas, ref, rtol=1.2e-7, atol=0)


def test_zero_snr_sigma_table_keeps_the_last_sigma_finite():
    sch = S.sigma_noise_schedule(**SD_KW, rescale_betas_zero_snr=True)
    assert sch.alphas_cumprod[-1] == np.float32(2.0 ** -24)
    assert S.vp_sigmas(sch.alphas_cumprod)[-1] == np.float32(np.sqrt(2.0 ** 24 - 1))  # ~4096


def test_sigma_to_t_inverts_the_table_and_interpolates_log_sigma():
    sigmas = S.vp_sigmas(S.sigma_noise_schedule(**SD_KW).alphas_cumprod)
    log_sigmas = np.log(sigmas)
    np.testing.assert_allclose(S.sigma_to_t(sigmas[[0, 10, 999]], log_sigmas), [0, 10, 999], atol=2e-6)
    midway = np.sqrt(np.float64(sigmas[10]) * np.float64(sigmas[11]))  # halfway in log sigma
    np.testing.assert_allclose(S.sigma_to_t([midway], log_sigmas), [10.5], atol=2e-6)
    assert list(S.sigma_to_t([1e-5, 1e5], log_sigmas)) == [0.0, 999.0]  # clamped to the table


@pytest.mark.parametrize("spacing", S.TIMESTEP_SPACINGS)
def test_euler_and_dpm_solver_timesteps_equal_diffusers(spacing):
    diffusers = _diffusers()
    for n in (1, 3, 7, 50):
        ref = diffusers.EulerDiscreteScheduler(timestep_spacing=spacing, steps_offset=1)
        ref.set_timesteps(n)
        ours = S.euler_timesteps(n, 1000, spacing, 1)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, ref.timesteps.numpy(), err_msg=f"euler {spacing} n={n}")
        ref = diffusers.DPMSolverMultistepScheduler(timestep_spacing=spacing, steps_offset=1)
        ref.set_timesteps(n)
        np.testing.assert_array_equal(S.dpm_solver_timesteps(n, 1000, spacing, 1), ref.timesteps.numpy(),
                                      err_msg=f"dpm {spacing} n={n}")


def test_euler_linspace_timesteps_are_fractional_and_dpm_skips_t0():
    assert list(S.euler_timesteps(5, 1000, "linspace")) == [999.0, 749.25, 499.5, 249.75, 0.0]
    assert list(S.dpm_solver_timesteps(5, 1000, "linspace")) == [999, 799, 599, 400, 200]


@pytest.mark.parametrize("skip_prk_steps", [True, False])
@pytest.mark.parametrize("spacing", S.TIMESTEP_SPACINGS)
def test_pndm_timesteps_equal_diffusers(spacing, skip_prk_steps):
    diffusers = _diffusers()
    for n in (4, 10, 50):
        ref = diffusers.PNDMScheduler(timestep_spacing=spacing, steps_offset=1, skip_prk_steps=skip_prk_steps)
        ref.set_timesteps(n)
        ts, prk = S.pndm_timesteps(n, 1000, spacing, 1, skip_prk_steps)
        np.testing.assert_array_equal(ts, ref.timesteps.numpy(), err_msg=f"{spacing} n={n}")
        assert prk == len(ref.prk_timesteps)


def test_lcm_timesteps_equal_diffusers():
    diffusers = _diffusers()
    for n, original in ((1, 50), (4, 50), (8, 50), (50, 50), (6, 100)):
        ref = diffusers.LCMScheduler(original_inference_steps=original)
        ref.set_timesteps(n)
        np.testing.assert_array_equal(S.lcm_timesteps(n, 1000, original), ref.timesteps.numpy())
