"""CogVideoX text-to-video end to end through the command line, against diffusers' CogVideoXPipeline
on the same tiny checkpoint from the same latents.

Tolerance: frames agree to atol 1e-4 (values in [0, 1]; float32). Measured differences are ~1e-6 to
1e-5: MindSpore's exp/tanh/erf and matmul summation order differ slightly from PyTorch's, and two
denoising steps through a random network amplify that only mildly.
"""
import json

import numpy as np
import pytest

from tests.cli import generate

ATOL = 1e-4
CASES = [  # (transformer flavour, checkpoint scheduler, dynamic CFG, guidance scale, further overrides)
    ("2b", "CogVideoXDDIMScheduler", False, 6.0, ()),
    ("5b", "CogVideoXDPMScheduler", True, 6.0, ()),
    ("1.5", "DDIMScheduler", False, 6.0, ()),
    ("5b", "CogVideoXDDIMScheduler", False, 1.0, ()),  # guidance off: one conditional pass
    ("2b", "CogVideoXDDIMScheduler", False, 6.0, ("runtime.batch_guidance=false",)),  # the passes one by one
]


def reference_frames(pipe, latents, seed, monkeypatch, **kw):
    from tests.reference import cogvideox as ref
    ref.feed_numpy_noise(monkeypatch, seed)
    return ref.run(pipe, latents, **kw)


def toolkit_frames(folder, latents_path, run_dir, *extra):
    from tests.reference import cogvideox as ref
    generate(f"model.path={folder}", f"latents={latents_path}", f"hydra.run.dir={run_dir}",
             f"num_frames={ref.NUM_FRAMES}", f"height={ref.HEIGHT}", f"width={ref.WIDTH}",
             f"max_sequence_length={ref.MAX_SEQ}", "prompt=a cat walks on the grass", "negative_prompt=''",
             "seed=7", "runtime.progress=false", *extra)
    return np.load(run_dir / "frames.npy")


@pytest.mark.slow
@pytest.mark.parametrize("flavour,scheduler,dynamic,guidance,extra", CASES)
def test_frames_match_diffusers_from_the_same_latents(cogvideox_ref, flavour, scheduler, dynamic, guidance, extra,
                                                      tmp_path, monkeypatch):
    from tests.reference import cogvideox as ref
    folder, pipe = cogvideox_ref(flavour, scheduler)
    latents = np.random.default_rng(3).standard_normal(ref.latent_shape(pipe)).astype(np.float32)
    np.save(tmp_path / "latents.npy", latents)
    expected = reference_frames(pipe, latents, 7, monkeypatch, num_inference_steps=2, guidance_scale=guidance,
                                use_dynamic_cfg=dynamic)
    got = toolkit_frames(folder, tmp_path / "latents.npy", tmp_path / "run", "num_inference_steps=2",
                         f"guidance_scale={guidance}", f"use_dynamic_cfg={str(dynamic).lower()}", *extra)
    assert got.shape == expected.shape == (ref.NUM_FRAMES, ref.HEIGHT, ref.WIDTH, 3)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    assert np.abs(got - expected).max() < ATOL
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["resolved"]["num_inference_steps"] == 2 and len(record["steps"]) == 2


@pytest.mark.slow
def test_sharded_variant_checkpoint_gives_the_same_frames(cogvideox_ref, tmp_path, monkeypatch):
    from tests.reference import cogvideox as ref
    folder, pipe = cogvideox_ref("5b", "CogVideoXDDIMScheduler", variant="fp16", max_shard_size="60KB")
    shards = sorted(p.name for p in (folder / "transformer").iterdir())
    assert any("fp16-00001-of-" in n for n in shards), shards  # really sharded variant files
    latents = np.random.default_rng(4).standard_normal(ref.latent_shape(pipe)).astype(np.float32)
    np.save(tmp_path / "latents.npy", latents)
    expected = reference_frames(pipe, latents, 7, monkeypatch, num_inference_steps=2, guidance_scale=6.0)
    got = toolkit_frames(folder, tmp_path / "latents.npy", tmp_path / "run", "model.variant=fp16",
                         "num_inference_steps=2", "guidance_scale=6.0", "use_dynamic_cfg=false")
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_scheduler_swapped_from_config_matches_diffusers_from_config(cogvideox_ref, tmp_path, monkeypatch):
    from diffusers import DDIMScheduler
    from tests.reference import cogvideox as ref
    folder, pipe = cogvideox_ref("2b", "CogVideoXDDIMScheduler")
    latents = np.random.default_rng(5).standard_normal(ref.latent_shape(pipe)).astype(np.float32)
    np.save(tmp_path / "latents.npy", latents)
    original = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(original.config, timestep_spacing="linspace")
    try:
        expected = reference_frames(pipe, latents, 7, monkeypatch, num_inference_steps=3, guidance_scale=4.0)
    finally:
        pipe.scheduler = original
    got = toolkit_frames(folder, tmp_path / "latents.npy", tmp_path / "run", "scheduler=ddim",
                         "scheduler.timestep_spacing=linspace", "num_inference_steps=3", "guidance_scale=4.0",
                         "use_dynamic_cfg=false")
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_compiled_and_eager_denoisers_give_the_same_frames(tmp_path):
    runs = {}
    for jit in ("true", "false"):
        generate(f"hydra.run.dir={tmp_path / jit}", f"runtime.jit={jit}", "num_inference_steps=2",
                 "runtime.progress=false")
        runs[jit] = np.load(tmp_path / jit / "frames.npy")
    np.testing.assert_allclose(runs["true"], runs["false"], atol=1e-5, rtol=0)
