"""AnimateDiff text-to-video end to end through the command line (`model=animatediff` with the tiny checkpoints
as model.path / model.motion_adapter), against diffusers' AnimateDiffPipeline on the same two folders from the
same latents; and the inputs it refuses, before any weights load.

Tolerance: frames agree to atol 1e-4 (values in [0, 1]; float32). Measured differences are ~3e-6: MindSpore's
exp/erf and matmul summation order differ slightly from PyTorch's, and a few denoising steps through a random
network amplify that only mildly.
"""
import json

import numpy as np
import pytest

from tests.cli import generate, with_
from toolkit import runner
from toolkit.pipelines.common import RequestError

ATOL = 1e-4
ISSUE_DDIM = ["scheduler=ddim", "scheduler.clip_sample=false", "scheduler.timestep_spacing=linspace",
              "scheduler.beta_schedule=linear", "scheduler.steps_offset=1"]


@pytest.fixture(scope="module")
def ref(animatediff_ref):
    return animatediff_ref


@pytest.fixture(scope="module")
def latents_file(ref, tmp_path_factory):
    from tests.reference import animatediff as tiny
    latents = np.random.default_rng(3).standard_normal(tiny.latent_shape(ref[2])).astype(np.float32)
    path = tmp_path_factory.mktemp("animatediff_latents") / "latents.npy"
    np.save(path, latents)
    return path


def reference_frames(pipe, latents_file, scheduler=None, **kw):
    """diffusers' frames, with ``scheduler`` (if given) swapped in for the call."""
    from tests.reference import animatediff as tiny
    original = pipe.scheduler
    if scheduler is not None:
        pipe.scheduler = scheduler
    try:
        return tiny.run(pipe, np.load(latents_file), **kw)
    finally:
        pipe.scheduler = original


def common_overrides(ref, latents_file):
    """The tiny checkpoints under the real preset, tiny sizes, fixed latents; the eager denoiser (the compiled one
    equals it: tests/test_animatediff_modules.py; compiling this UNet takes ~15 s)."""
    from tests.reference import animatediff as tiny
    base, adapter, _ = ref
    return ["model=animatediff", f"model.path={base}", f"model.motion_adapter={adapter}", f"latents={latents_file}",
            f"num_frames={tiny.NUM_FRAMES}", f"height={tiny.HEIGHT}", f"width={tiny.WIDTH}",
            "prompt=a cat walks on the grass", "negative_prompt=''", "seed=7", "runtime.progress=false",
            "runtime.jit=false"]


def toolkit_frames(ref, latents_file, run_dir, *extra):
    """Frames written by experiments/generate.py, run as a user runs it."""
    generate(*common_overrides(ref, latents_file), f"hydra.run.dir={run_dir}", *extra)
    return np.load(run_dir / "frames.npy")


def runner_frames(ref, latents_file, run_dir, *extra):
    """Frames written by toolkit.runner.run in this process from the config the command line composes (no
    subprocess: the loaded model is reused across these tests)."""
    runner.run(compose(*common_overrides(ref, latents_file), *extra), run_dir)
    return np.load(run_dir / "frames.npy")


@pytest.mark.slow
def test_frames_match_diffusers_with_the_issues_ddim_override(ref, latents_file, tmp_path):
    """The seed's scheduler setup, given on the command line."""
    from diffusers import DDIMScheduler

    from tests.reference import animatediff as tiny
    base, _, pipe = ref
    ddim = DDIMScheduler.from_pretrained(str(base), subfolder="scheduler", clip_sample=False,
                                         timestep_spacing="linspace", beta_schedule="linear", steps_offset=1)
    expected = reference_frames(pipe, latents_file, ddim, num_inference_steps=3)
    got = toolkit_frames(ref, latents_file, tmp_path / "run", *ISSUE_DDIM, "num_inference_steps=3",
                         "guidance_scale=7.5")
    assert got.shape == expected.shape == (tiny.NUM_FRAMES, tiny.HEIGHT, tiny.WIDTH, 3)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["resolved"]["scheduler"] == {"_class_name": "DDIMScheduler", "clip_sample": False,
                                               "timestep_spacing": "linspace", "beta_schedule": "linear",
                                               "steps_offset": 1}
    assert len(record["steps"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("choice,diffusers_kw,cli", [
    ("dpmpp_2m", dict(algorithm_type="dpmsolver++", solver_order=2), []),  # conf/scheduler/dpmpp_2m.yaml sets both
    ("pndm", dict(skip_prk_steps=True), ["scheduler.skip_prk_steps=true"]),  # PLMS, as SD 1.5 configures it
])
def test_frames_match_diffusers_with_a_multistep_scheduler(ref, latents_file, tmp_path, choice, diffusers_kw, cli):
    """The SD checkpoint's scheduler_config.json read by another class, as ``Class.from_pretrained(sd,
    subfolder="scheduler")``. (Not ``from_config(pipe.scheduler.config)`` of a scheduler built in this process:
    diffusers then drops the keys that were left at the first class's defaults, here timestep_spacing.)"""
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler
    base, _, pipe = ref
    cls = {"dpmpp_2m": DPMSolverMultistepScheduler, "pndm": PNDMScheduler}[choice]
    scheduler = cls.from_pretrained(str(base), subfolder="scheduler", **diffusers_kw)
    assert scheduler.config.timestep_spacing == "leading"  # the checkpoint's value
    expected = reference_frames(pipe, latents_file, scheduler,
                                num_inference_steps=3, guidance_scale=5.0)
    frames = toolkit_frames if choice == "dpmpp_2m" else runner_frames  # one through the command line
    got = frames(ref, latents_file, tmp_path / "run", f"scheduler={choice}", *cli, "num_inference_steps=3",
                 "guidance_scale=5.0")
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_clip_skip_frames_match_diffusers(ref, latents_file, tmp_path):
    expected = reference_frames(ref[2], latents_file, clip_skip=2)
    got = runner_frames(ref, latents_file, tmp_path / "run", "clip_skip=2", "scheduler=checkpoint",
                        "num_inference_steps=2")
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    plain = reference_frames(ref[2], latents_file)
    assert np.abs(plain - expected).max() > 10 * ATOL  # clip_skip changes the video


def test_gif_is_written_with_output_gif(ref, latents_file, tmp_path):
    from PIL import Image

    from tests.reference import animatediff as tiny
    frames = runner_frames(ref, latents_file, tmp_path / "run", "output.gif=true", "num_inference_steps=1",
                           "guidance_scale=1.0")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(record["files"]) == {"frames.npy", "video.mp4", "video.gif"}
    with Image.open(tmp_path / "run" / "video.gif") as gif:
        assert (gif.n_frames, gif.size) == (tiny.NUM_FRAMES, (tiny.WIDTH, tiny.HEIGHT))
        first = np.asarray(gif.convert("RGB"), dtype=np.float32) / 255
    assert np.abs(first - frames[0]).mean() < 0.05  # a palette image of the first frame


@pytest.fixture(scope="module")
def loaded(ref):
    from toolkit.pipelines import animatediff as family
    base, adapter, _ = ref
    return family.load(base, jit=False, motion_adapter=adapter)


@pytest.mark.parametrize("chunk", [1, 3])
def test_decoding_in_frame_chunks_matches_diffusers_decode_latents(ref, loaded, chunk):
    import torch

    from toolkit.pipelines import animatediff as family
    z = np.random.default_rng(5).standard_normal((1, 4, 5, 8, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ref[2].decode_latents(torch.from_numpy(z), decode_chunk_size=chunk).numpy()
    got = family.decode(loaded, z, chunk, {"enabled": False})
    assert got.shape == expected.shape == (1, 3, 5, 64, 48)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunk_fits, chunk_bytes", [(True, 2 ** 26), (False, 2 ** 26), (True, 10 ** 5)])
def test_compiled_decoding_matches_diffusers_decode_latents(ref, monkeypatch, chunk_fits, chunk_bytes):
    """runtime.jit=true: the compiled VAE decodes a small chunk that fits one graph in one call; a chunk that does
    not fit, or whose widest activation passes CHUNK_GRAPH_BYTES (a 3-frame chunk here: 3 frames x 8 channels x
    64 x 48 x 4 B = 295 KB), one frame per call (one graph for every chunk)."""
    import torch

    from toolkit.pipelines import animatediff as family
    base, adapter, pipe = ref
    model = family.load(base, jit=True, motion_adapter=adapter)
    monkeypatch.setattr(family, "decoder_fits_one_graph", lambda vae, n, h, w: chunk_fits or n == 1)
    monkeypatch.setattr(family, "CHUNK_GRAPH_BYTES", chunk_bytes)
    batches = []
    graph = model.decode_compiled
    model.decode_compiled = lambda z: batches.append(z.shape[0]) or graph(z)
    z = np.random.default_rng(5).standard_normal((1, 4, 5, 8, 6)).astype(np.float32)
    with torch.no_grad():
        expected = pipe.decode_latents(torch.from_numpy(z), decode_chunk_size=3).numpy()
    np.testing.assert_allclose(family.decode(model, z, 3, {"enabled": False}), expected, atol=ATOL, rtol=0)
    assert batches == ([3, 2] if chunk_fits and chunk_bytes > 10 ** 5 else [1] * 5)


def test_tiled_decoding_matches_diffusers_vae_tiling(ref, loaded):
    import torch

    from toolkit.pipelines import animatediff as family
    z = np.random.default_rng(6).standard_normal((1, 4, 2, 8, 6)).astype(np.float32)
    pipe = ref[2]
    pipe.vae.enable_tiling()  # tiles of the VAE's sample_size (32 px) with 1/4 overlap
    try:
        with torch.no_grad():
            expected = pipe.decode_latents(torch.from_numpy(z)).numpy()
    finally:
        pipe.vae.disable_tiling()
    tiling = family.check_tiling({"enabled": True}, loaded.configs)
    assert tiling == {"enabled": True, "tile_sample_min_size": 32, "tile_overlap_factor": 0.25}
    np.testing.assert_allclose(family.decode(loaded, z, 16, tiling), expected, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------ configuration


def compose(*overrides):
    from pathlib import Path

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("generate", overrides=list(overrides)), resolve=True)


def test_preset_runs_the_docs_ddim_which_is_the_issue_override():
    preset = runner._family_request(compose("model=animatediff"))["scheduler"]
    explicit = runner._family_request(compose("model=animatediff", *ISSUE_DDIM))["scheduler"]
    assert preset == explicit == {"_class_name": "DDIMScheduler", "clip_sample": False, "timestep_spacing": "linspace",
                                  "beta_schedule": "linear", "steps_offset": 1}


def test_preset_is_the_model_card_and_the_command_line_wins():
    c = compose("model=animatediff")
    assert (c["model"]["path"], c["model"]["motion_adapter"]) == ("emilianJR/epiCRealism",
                                                                 "guoyww/animatediff-motion-adapter-v1-5-2")
    assert (c["num_frames"], c["height"], c["width"], c["num_inference_steps"], c["guidance_scale"]) == \
        (16, 512, 512, 25, 7.5)
    c = compose("model=animatediff", "model.path=/ckpt/sd15", "model.motion_adapter=/ckpt/adapter",
                "scheduler=dpmpp_2m", "clip_skip=2", "decode_chunk_size=4")
    assert (c["model"]["path"], c["model"]["motion_adapter"], c["clip_skip"], c["decode_chunk_size"]) == \
        ("/ckpt/sd15", "/ckpt/adapter", 2, 4)
    assert runner._family_request(c)["scheduler"] == {"_class_name": "DPMSolverMultistepScheduler",
                                                      "algorithm_type": "dpmsolver++", "solver_order": 2}


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def base_request(ref):
    from tests.reference import animatediff as tiny
    base, adapter, _ = ref
    return compose("model=animatediff", f"model.path={base}", f"model.motion_adapter={adapter}",
                   f"num_frames={tiny.NUM_FRAMES}", f"height={tiny.HEIGHT}", f"width={tiny.WIDTH}",
                   "num_inference_steps=2", "runtime.progress=false")






CASES = [
    ({"num_frames": 17}, r"num_frames=17: the motion adapter places at most 16 frames \(its motion_max_seq_length"
                         r".*allowed: 1..16"),
    ({"height": 60}, r"height=60: must be divisible by 8 .*nearest allowed: \[56, 64\]"),
    ({"width": 44}, r"width=44: must be divisible by 8"),
    ({"scheduler.name": "HeunDiscreteScheduler"}, r"scheduler: .*HeunDiscreteScheduler.*DDIMScheduler"),
    ({"scheduler.use_karras_sigmas": True}, r"scheduler: DDIMScheduler: unknown override 'use_karras_sigmas'; "
                                            r"allowed overrides: \[.*'clip_sample'"),
    ({"clip_skip": 6}, r"clip_skip=6: the text encoder has 5 layers \(allowed: 0..5 or null\)"),
    ({"decode_chunk_size": 0}, r"decode_chunk_size=0: must be >= 1"),
    ({"image": "cat.png"}, r"image='cat.png': AnimateDiff is text-to-video and takes no image"),
    ({"model.motion_adapter": None}, r"model.motion_adapter=None: this family needs it"),
    ({"vae.tiling": True, "vae.tile_sample_min_height": 32, "vae.tile_sample_min_width": 64},
     r"vae.tile_sample_min_height/width=\(32, 64\): Stable Diffusion's VAE tiles are square"),
]


@pytest.mark.parametrize("changes,message", CASES, ids=[next(iter(c)) for c, _ in CASES])
def test_bad_value_is_refused_before_loading(base_request, no_loading, changes, message, tmp_path):
    with pytest.raises(RequestError, match=message):
        runner.run(with_(base_request, **changes), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_adapter_whose_blocks_do_not_match_the_unet_is_named(base_request, no_loading, tmp_path):
    from tests.reference.animatediff import build_adapter
    build_adapter(tmp_path / "adapter3", block_out_channels=(8, 16, 16), motion_transformer_layers_per_block=1)
    request = with_(base_request, **{"model.motion_adapter": str(tmp_path / "adapter3")})
    with pytest.raises(RequestError, match=r"model.motion_adapter=.*adapter3.*: its block layout does not match the "
                                           r"UNet of model.path: the UNet has 2 down blocks .* the adapter has 3"):
        runner.run(request, tmp_path / "run")


def test_latents_of_the_wrong_layout_are_refused(base_request, no_loading, tmp_path):
    np.save(tmp_path / "lat.npy", np.zeros((1, 8, 4, 8, 6), np.float32))  # (B, F, C, h, w): CogVideoX's layout
    with pytest.raises(RequestError, match=r"latents=.*shape \(1, 8, 4, 8, 6\), expected \(1, 4, 8, 8, 6\)"):
        runner.run(with_(base_request, latents=str(tmp_path / "lat.npy")), tmp_path / "run")


def test_cli_reports_too_many_frames_and_exits_nonzero(ref, tmp_path):
    base, adapter, _ = ref
    proc = generate("model=animatediff", f"model.path={base}", f"model.motion_adapter={adapter}", "num_frames=24",
                    "height=64", "width=48", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0
    assert "num_frames=24: the motion adapter places at most 16 frames" in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "frames.npy").exists()
