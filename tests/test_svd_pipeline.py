"""Stable Video Diffusion end to end through the command line against diffusers' StableVideoDiffusionPipeline on
the tiny checkpoint of tests/reference/svd.py, the micro-conditioning sweep, the forms ``image`` takes, and the
requests refused before any weights load.

Runs are eager (``runtime.jit=false``): compiling the UNet takes ~20 s, and compiled equals eager is checked in
tests/test_svd_modules.py.

Tolerance: frames agree to atol 1e-4 (values in [0, 1], float32; measured ~2e-5: two Euler steps from sigma 700
through random networks amplify MindSpore's and PyTorch's ~1e-6 differences in summation order and sin/cos/rsqrt).
"""
import copy
import json
import shutil

import numpy as np
import pytest

from tests.cli import generate

ATOL = 1e-4
TINY = ("height=32", "width=48", "num_frames=6", "num_inference_steps=2", "runtime.jit=false",
        "runtime.progress=false")


def write_image(path, height=40, width=50, seed=0):
    """A non-square RGB png of another size than the output, so the resizes are exercised."""
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return Image.open(path).convert("RGB")


@pytest.mark.slow
def test_frames_match_diffusers_from_fixed_latents(svd_ref, tmp_path):
    """No random draw differs: latents given, noise_aug_strength=0. Guidance ramps 1 -> 3 across the frames; six
    frames are decoded four at a time; the mp4 plays at ``fps``, which the model also sees (as fps - 1)."""
    from tests.reference import svd as ref
    from toolkit.io import read_video_info

    knobs = dict(fps=9, motion_bucket_id=100, min_guidance_scale=1.0, max_guidance_scale=3.0, decode_chunk_size=4)
    folder, pipe = svd_ref()
    image = write_image(tmp_path / "image.png")
    latents = np.random.default_rng(3).standard_normal(ref.latent_shape(pipe)).astype(np.float32)
    np.save(tmp_path / "latents.npy", latents)
    expected = ref.run(pipe, image, latents, noise_aug_strength=0.0, **knobs)
    generate("model=svd_xt", f"model.path={folder}", "model.variant=null", f"image={tmp_path / 'image.png'}",
             f"latents={tmp_path / 'latents.npy'}", "noise_aug_strength=0", f"hydra.run.dir={tmp_path / 'run'}",
             *TINY, *(f"{k}={v}" for k, v in knobs.items()))
    got = np.load(tmp_path / "run" / "frames.npy")
    assert got.shape == expected.shape == (ref.NUM_FRAMES, ref.HEIGHT, ref.WIDTH, 3)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["resolved"]["fps"] == 9 and len(record["steps"]) == 2
    assert record["steps"][0]["guidance_scale"] == 3.0
    info = read_video_info(tmp_path / "run" / "video.mp4")
    assert info["frames"] == ref.NUM_FRAMES and info["fps"] == 9


@pytest.fixture(scope="module")
def model(svd_ref):
    from toolkit.pipelines import svd
    return svd.load(svd_ref()[0], jit=False)


def generate_counting_batches(model, r):
    """svd.generate's frames, and the batch size of every denoiser call it made."""
    from toolkit.pipelines import svd

    batches = []
    original = model.forward
    model.forward = lambda x, *a: batches.append(x.shape[0]) or original(x, *a)
    try:
        return svd.generate(model, r, np.random.default_rng(0), progress=False), batches
    finally:
        model.forward = original


def test_guidance_off_runs_one_pass_and_matches_diffusers(svd_ref, model, request_for, tmp_path):
    """max_guidance_scale <= 1: no unconditional pass (diffusers: do_classifier_free_guidance is max(scale) > 1),
    whatever min_guidance_scale says; two videos of one image, decoded whole."""
    from tests.reference import svd as ref

    _, pipe = svd_ref()
    image = write_image(tmp_path / "image.png")
    latents = np.random.default_rng(4).standard_normal(ref.latent_shape(pipe, batch=2)).astype(np.float32)
    knobs = dict(fps=10, motion_bucket_id=60, min_guidance_scale=0.5, max_guidance_scale=1.0, decode_chunk_size=6)
    expected = ref.run(pipe, image, latents, noise_aug_strength=0.0, num_videos_per_prompt=2, **knobs)
    r = checked(request_for(image=str(tmp_path / "image.png"), noise_aug_strength=0.0, num_videos_per_prompt=2,
                            **knobs))
    r["latents"] = latents
    got, batches = generate_counting_batches(model, r)
    assert batches == [2, 2]  # the two videos, no unconditional copies
    assert got.shape == expected.shape == (2, ref.NUM_FRAMES, ref.HEIGHT, ref.WIDTH, 3)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_guidance_passes_one_after_the_other_match_diffusers(svd_ref, model, request_for, tmp_path):
    """runtime.batch_guidance=false: the unconditional and the conditional pass run as two calls of the batch's
    size (fewer activations held at once) and give diffusers' frames, as the joint batch does."""
    from tests.reference import svd as ref

    _, pipe = svd_ref()
    image = write_image(tmp_path / "image.png")
    latents = np.random.default_rng(5).standard_normal(ref.latent_shape(pipe)).astype(np.float32)
    knobs = dict(fps=8, motion_bucket_id=90, min_guidance_scale=1.0, max_guidance_scale=3.0, decode_chunk_size=6)
    expected = ref.run(pipe, image, latents, noise_aug_strength=0.0, **knobs)
    r = checked(request_for(image=str(tmp_path / "image.png"), noise_aug_strength=0.0,
                            **{"runtime.batch_guidance": False}, **knobs))
    r["latents"] = latents
    got, batches = generate_counting_batches(model, r)
    assert batches == [1, 1, 1, 1]  # two steps, each an unconditional and a conditional call
    np.testing.assert_allclose(got[0], expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_microconditioning_sweep_draws_noise_augmentation_from_the_seed_as_diffusers(svd_ref, tmp_path):
    """conf/experiment/svd_microcond_sweep at tiny size, two of its axes pinned on the command line: each run's
    augmentation noise and initial latents come from numpy PCG64(seed), in that order, which fed to diffusers gives
    the same frames; noise_aug_strength changes the result."""
    from tests.reference import svd as ref
    from toolkit.io import read_video_info

    folder, pipe = svd_ref()
    image = write_image(tmp_path / "image.png")
    generate("+experiment=svd_microcond_sweep", f"model.path={folder}", "model.variant=null",
             f"image={tmp_path / 'image.png'}", "seed=5", "fps=8", "motion_bucket_id=200",
             "noise_aug_strength=0.0,0.1", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY, multirun=True)
    frames = {}
    for i in range(2):
        record = json.loads((tmp_path / "sweep" / str(i) / "run.json").read_text())
        strength = record["resolved"]["noise_aug_strength"]
        assert (record["resolved"]["fps"], record["resolved"]["motion_bucket_id"]) == (8, 200)
        assert read_video_info(tmp_path / "sweep" / str(i) / "video.mp4")["fps"] == 8
        frames[strength] = np.load(tmp_path / "sweep" / str(i) / "frames.npy")
        expected = ref.run(pipe, image, None, seed=5, fps=8, motion_bucket_id=200, noise_aug_strength=strength,
                           decode_chunk_size=8)
        np.testing.assert_allclose(frames[strength], expected, atol=ATOL, rtol=0)
    assert sorted(frames) == [0.0, 0.1] and np.abs(frames[0.1] - frames[0.0]).max() > 1e-3


# ------------------------------------------------------------------------------------------- the image input
@pytest.fixture(scope="module")
def request_for(svd_ref):
    """A composed SVD request dict on the tiny checkpoint, with changes applied (dotted keys reach sub-dicts)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tests.cli import ROOT

    folder, _ = svd_ref()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=["model=svd_xt", f"model.path={folder}", "model.variant=null", *TINY])
    base = OmegaConf.to_container(cfg, resolve=True)

    def make(**changes):
        r = copy.deepcopy(base)
        for key, value in changes.items():
            node, path = r, key.split(".")
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = value
        return r

    return make


def checked(request):
    from toolkit import runner
    return runner.prepare(request)[2]


def test_image_as_file_array_npy_and_url_is_the_same_input(request_for, tmp_path):
    import functools
    import http.server
    import threading

    image = write_image(tmp_path / "image.png")
    array = np.asarray(image)
    np.save(tmp_path / "image.npy", array)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sources = [str(tmp_path / "image.png"), array, str(tmp_path / "image.npy"),
                   f"http://127.0.0.1:{server.server_address[1]}/image.png"]
        results = [checked(request_for(image=s)) for s in sources]
    finally:
        server.shutdown()
    for r in results:
        assert r["image_pixels"].shape == (3, 32, 48) and r["clip_pixels"].shape == (1, 3, 224, 224)
        np.testing.assert_array_equal(r["image_pixels"], results[0]["image_pixels"])
        np.testing.assert_array_equal(r["clip_pixels"], results[0]["clip_pixels"])


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def real_geometry(svd_ref, tmp_path_factory):
    """The tiny checkpoint's configs (no weights) with a four-level VAE, so sizes must divide by 8 as for SVD."""
    src, _ = svd_ref()
    dst = tmp_path_factory.mktemp("svd_configs")
    for p in src.rglob("*.json"):
        (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst / p.relative_to(src))
    vae = json.loads((dst / "vae" / "config.json").read_text())
    vae.update(block_out_channels=[32, 64, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4)
    (dst / "vae" / "config.json").write_text(json.dumps(vae))
    return dst


BAD = [
    ({"image": None}, r"image=None: Stable Video Diffusion animates an image: give image="),
    ({"min_guidance_scale": 3.5, "max_guidance_scale": 2.0},
     r"min_guidance_scale=3.5: is above max_guidance_scale=2.0 .*\(allowed: <= 2.0\)"),
    ({"decode_chunk_size": 0}, r"decode_chunk_size=0: must be >= 1"),
    ({"motion_bucket_id": -1}, r"motion_bucket_id=-1: must be >= 0"),
    ({"motion_bucket_id": 12.5}, r"motion_bucket_id=12.5: must be an integer"),
    ({"fps": 0}, r"fps=0: must be >= 1"),
    ({"fps": 7.5}, r"fps=7.5: must be an integer"),
    ({"noise_aug_strength": -0.1}, r"noise_aug_strength=-0.1: must be >= 0"),
    ({"height": 36}, r"height=36: must be divisible by 8 \(VAE compression\); nearest allowed: \[32, 40\]"),
    ({"width": 50}, r"width=50: must be divisible by 8"),
    ({"num_frames": 0}, r"num_frames=0: must be >= 1"),
    ({"prompt": "a rocket"}, r"prompt='a rocket': Stable Video Diffusion takes no prompt"),
    ({"guidance_scale": 5.0}, r"guidance_scale=5.0: .* use min_guidance_scale / max_guidance_scale"),
    ({"vae.posterior": "sample"}, r"vae.posterior='sample': .*posterior's mode .*\(allowed: mode\)"),
    ({"vae.tiling": True}, r"vae.tiling=True: the temporal VAE decoder has no tiled mode"),
    ({"scheduler.timestep_type": "sometimes"}, r"timestep_type.*sometimes"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[next(iter(c)) for c, _ in BAD])
def test_bad_value_is_refused_before_loading(request_for, real_geometry, no_loading, changes, message, tmp_path):
    from toolkit import runner
    from toolkit.pipelines.common import RequestError

    write_image(tmp_path / "image.png")
    request = request_for(**{"model.path": str(real_geometry), "image": str(tmp_path / "image.png"), **changes})
    with pytest.raises(RequestError, match=message):
        runner.run(request, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,message", [(None, r"image='.*missing.png': no such file"),
                                             (b"not an image", r"image='.*broken.png': not a readable image")])
def test_unreadable_image_is_refused_before_loading(request_for, no_loading, content, message, tmp_path):
    from toolkit import runner
    from toolkit.pipelines.common import RequestError

    path = tmp_path / ("missing.png" if content is None else "broken.png")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RequestError, match=message):
        runner.run(request_for(image=str(path)), tmp_path / "run")


def test_latents_of_the_wrong_shape_are_refused_before_loading(request_for, no_loading, tmp_path):
    from toolkit import runner
    from toolkit.pipelines.common import RequestError

    write_image(tmp_path / "image.png")
    np.save(tmp_path / "latents.npy", np.zeros((1, 6, 4, 4, 6), np.float32))  # (h, w) of an 8x VAE, not 2x
    with pytest.raises(RequestError, match=r"latents=.*shape \(1, 6, 4, 4, 6\), expected \(1, 6, 4, 16, 24\)"):
        runner.run(request_for(image=str(tmp_path / "image.png"), latents=str(tmp_path / "latents.npy")),
                   tmp_path / "run")


def test_cli_without_image_exits_nonzero_and_writes_nothing(svd_ref, tmp_path):
    folder, _ = svd_ref()
    proc = generate("model=svd_xt", f"model.path={folder}", "model.variant=null", f"hydra.run.dir={tmp_path / 'run'}",
                    *TINY, check=False)
    assert proc.returncode != 0 and "image=None: Stable Video Diffusion animates an image" in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "run.json").exists()
