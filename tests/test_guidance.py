"""Classifier-free guidance: closed-form combinations, rescaling against diffusers' rescale_noise_cfg, and the
guidance-scale schedules against the formulas the diffusers pipelines evaluate."""
from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.guidance import (cfg_combine, cogvideox_dynamic_guidance, constant_guidance, linear_frame_guidance,
                              rescale_guidance)

SHAPE = (2, 3, 4, 5, 6)  # [B, F, C, H, W]


def _torch():
    torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
    pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")
    return torch


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(SHAPE, dtype=np.float32)


def test_cfg_closed_form():
    cond, uncond = np.full((1, 2), 3.0, np.float32), np.full((1, 2), 1.0, np.float32)
    np.testing.assert_array_equal(cfg_combine(cond, uncond, 2.5), np.full((1, 2), 6.0, np.float32))
    np.testing.assert_array_equal(cfg_combine(cond, uncond, 0.0), uncond)


def test_cfg_scale_one_returns_cond():
    cond, uncond = _pair()
    assert cfg_combine(cond, uncond, 1.0) is cond
    assert cfg_combine(cond, uncond, 1, rescale=0.7) is cond


def test_cfg_equals_the_cogvideox_pipeline_expression():
    torch = _torch()
    cond, uncond = _pair(1)
    expected = torch.from_numpy(uncond) + 6.0 * (torch.from_numpy(cond) - torch.from_numpy(uncond))
    out = cfg_combine(cond, uncond, 6.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.numpy())


@pytest.mark.parametrize("frame_axis", [1, 2, -4])
def test_per_frame_scale_applies_along_the_frame_axis(frame_axis):
    rng = np.random.default_rng(2)
    shape = [2, 3, 4, 5, 6]
    num_frames = shape[frame_axis]
    cond, uncond = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    scales = np.arange(2, num_frames + 2, dtype=np.float32)
    out = cfg_combine(cond, uncond, scales, frame_axis=frame_axis)
    for f in range(num_frames):
        take = lambda a: np.take(a, f, axis=frame_axis)  # noqa: E731
        np.testing.assert_allclose(take(out), take(cfg_combine(cond, uncond, float(scales[f]))), rtol=0, atol=0)


def test_per_frame_scale_equals_svd_pipeline_expression():
    torch = _torch()
    cond, uncond = _pair(3)
    scales = linear_frame_guidance(1.0, 3.0, SHAPE[1])
    # StableVideoDiffusionPipeline: linspace(min, max, F).unsqueeze(0), appended dims -> [1, F, 1, 1, 1]
    g = torch.linspace(1.0, 3.0, SHAPE[1]).unsqueeze(0)[:, :, None, None, None]
    expected = torch.from_numpy(uncond) + g * (torch.from_numpy(cond) - torch.from_numpy(uncond))
    np.testing.assert_array_equal(cfg_combine(cond, uncond, scales, frame_axis=1), expected.numpy())


def test_per_frame_scale_without_frame_axis_raises():
    cond, uncond = _pair()
    with pytest.raises(ValueError, match="frame_axis"):
        cfg_combine(cond, uncond, np.ones(SHAPE[1], np.float32))


@pytest.mark.parametrize("rescale", [0.0, 0.7, 1.0])
def test_rescale_equals_diffusers_rescale_noise_cfg(rescale):
    torch = _torch()
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    cond, uncond = _pair(4)
    cond = cond * 0.5 + 0.1
    guided = torch.from_numpy(uncond) + 7.5 * (torch.from_numpy(cond) - torch.from_numpy(uncond))
    expected = rescale_noise_cfg(guided, torch.from_numpy(cond), guidance_rescale=rescale) if rescale > 0 else guided
    # std is reduced in float64 here; torch's float32 reduction order differs: a few ulp
    np.testing.assert_allclose(cfg_combine(cond, uncond, 7.5, rescale=rescale), expected.numpy(), rtol=2e-6, atol=2e-6)


def test_full_rescale_matches_the_conditional_std_per_sample():
    cond, uncond = _pair(5)
    out = cfg_combine(cond, uncond, 5.0, rescale=1.0)
    axes = tuple(range(1, cond.ndim))
    np.testing.assert_allclose(out.std(axis=axes, ddof=1), cond.std(axis=axes, ddof=1), rtol=1e-5)
    np.testing.assert_array_equal(rescale_guidance(cond, cond, 1.0), cond)


def test_constant_guidance_ignores_the_step():
    assert [constant_guidance(6.0, i, t, 50) for i, t in [(0, 999), (49, 19)]] == [6.0, 6.0]


@pytest.mark.parametrize("t,expected", [(999, 2.291487174551452), (500, 7.0), (25, 1.0144458199834092), (0, 7.0)])
def test_cogvideox_dynamic_guidance_pinned(t, expected):
    # numbers from diffusers' expression, 1 + g * ((1 - cos(pi * ((n - t) / n) ** 5.0)) / 2), g = 6, n = 50,
    # with t the model timestep as CogVideoXPipeline passes it (t.item())
    assert cogvideox_dynamic_guidance(6.0, t, 50) == expected


@pytest.mark.parametrize("t", [999, 979, 512, 40, 19, 3])
def test_cogvideox_dynamic_guidance_equals_formula(t):
    n, g = 50, 6
    expected = 1 + g * ((1 - math.cos(math.pi * ((n - t) / n) ** 5.0)) / 2)
    assert cogvideox_dynamic_guidance(g, t, n) == expected
    assert cogvideox_dynamic_guidance(g, np.int64(t), n) == expected  # a numpy timestep from Sampler.timesteps


def test_linear_frame_guidance_equals_torch_linspace():
    torch = _torch()
    ours = linear_frame_guidance(1.0, 3.0, 14)
    assert ours.dtype == np.float32 and ours[0] == 1.0 and ours[-1] == 3.0
    np.testing.assert_array_equal(ours, torch.linspace(1.0, 3.0, 14).numpy())
