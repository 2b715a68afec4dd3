"""CogVideoX image-to-video: end to end through the command line against diffusers'
CogVideoXImageToVideoPipeline on the same tiny checkpoints from the same initial noise, the image-latent
input per module, the image preprocessing, and the requests an image-to-video checkpoint refuses.

Both sides take the VAE posterior's mode (``vae.posterior=mode`` here, ``sample_mode="argmax"`` there): diffusers
samples it with torch's generator, which numpy cannot reproduce.

Tolerances: frames agree to atol 1e-4 (values in [0, 1], float32; two denoising steps through random networks,
MindSpore's exp/tanh and summation order differ from PyTorch's by ~1e-6 relative, see tests/test_cogvideox_pipeline.py);
latents straight out of the VAE encoder to atol 2e-5 (a handful of convolutions and group norms, values O(1));
preprocessed pixels exactly (the same PIL resize and the same float32 arithmetic).
"""
import json

import numpy as np
import pytest

from tests.cli import cogvideox_conditioned_frames, generate

ATOL = 1e-4
CASES = [  # (flavour, checkpoint scheduler, dynamic CFG, num_frames)
    ("5b-i2v", "CogVideoXDPMScheduler", True, 9),   # learned positional embedding at its sample size
    ("1.5-i2v", "CogVideoXDDIMScheduler", False, 9),  # ofs, patch_size_t=2: 3 latent frames padded to 4
]


def write_image(path, height=40, width=50, seed=0):
    """A non-square RGB png of another size than the output, so the resize is exercised."""
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return Image.open(path).convert("RGB")


@pytest.mark.slow
@pytest.mark.parametrize("flavour,scheduler,dynamic,num_frames", CASES)
def test_frames_match_diffusers_image_to_video(cogvideox_i2v_ref, flavour, scheduler, dynamic, num_frames,
                                               tmp_path):
    from tests.reference import cogvideox_i2v as ref
    folder, pipe = cogvideox_i2v_ref(flavour, scheduler)
    image = write_image(tmp_path / "image.png")
    latents = np.random.default_rng(3).standard_normal(ref.latent_shape(pipe, num_frames)).astype(np.float32)
    np.save(tmp_path / "latents.npy", latents)
    expected = ref.run_i2v(pipe, image, latents, seed=7, num_inference_steps=2, guidance_scale=6.0,
                           use_dynamic_cfg=dynamic, num_frames=num_frames)
    got = cogvideox_conditioned_frames(folder, tmp_path / "run", f"image={tmp_path / 'image.png'}",
                         f"latents={tmp_path / 'latents.npy'}", f"num_frames={num_frames}", "num_inference_steps=2",
                         "guidance_scale=6.0", f"use_dynamic_cfg={str(dynamic).lower()}")
    assert got.shape == expected.shape == (num_frames, 32, 48, 3)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["resolved"]["mode"] == "i2v" and record["resolved"]["image"] == str(tmp_path / "image.png")


# ------------------------------------------------------------------------------------------- per module
@pytest.fixture(scope="module")
def loaded(cogvideox_i2v_ref):
    """flavour -> (our loaded model, diffusers pipeline)."""
    from toolkit.pipelines import cogvideox

    cache = {}

    def get(flavour):
        if flavour not in cache:
            folder, pipe = cogvideox_i2v_ref(flavour)
            cache[flavour] = (cogvideox.load(folder, jit=False), pipe)
        return cache[flavour]

    return get


@pytest.mark.parametrize("flavour,num_frames", [("5b-i2v", 9), ("5b-i2v", 5), ("1.5-i2v", 9), ("1.5-i2v", 13)])
def test_image_latent_input_matches_diffusers_prepare_latents(loaded, flavour, num_frames, rng):
    """The transformer's extra input channels: the scaled image latent at frame 0, zeros to the padded length
    (1.5: divided by the scaling factor, invert_scale_latents), for odd and even latent frame counts."""
    import torch
    from tests.reference import cogvideox_i2v as ref
    from toolkit.pipelines import cogvideox

    model, pipe = loaded(flavour)
    pixels = rng.uniform(-1, 1, (3, 32, 48)).astype(np.float32)
    shape = cogvideox.latent_shape(model.configs, 1, num_frames, 32, 48)
    assert shape == ref.latent_shape(pipe, num_frames)
    # diffusers' __call__ adds the 1.5 padding to num_frames before prepare_latents; prepare_latents adds none
    padded_frames = (shape[1] - 1) * 4 + 1
    with ref.posterior_mode(), torch.no_grad():
        _, expected = pipe.prepare_latents(torch.from_numpy(pixels)[None], 1, 4, padded_frames, 32, 48,
                                           torch.float32, "cpu", None, torch.zeros(shape))
    got = cogvideox.prepare_image_latents(model, pixels, 1, shape[1], "mode", rng, {})
    assert got.shape == tuple(expected.shape) == (1, shape[1], 4, 4, 6)
    np.testing.assert_allclose(got, expected.numpy(), atol=2e-5, rtol=0)
    assert np.abs(got[:, 0]).max() > 0.1 and not got[:, 1:].any()


def test_posterior_sample_draws_one_noise_per_video_from_the_run_generator(loaded):
    from toolkit.pipelines import cogvideox

    model, _ = loaded("5b-i2v")
    pixels = np.zeros((3, 32, 48), np.float32)
    mode = cogvideox.prepare_image_latents(model, pixels, 2, 3, "mode", None, {})
    a = cogvideox.prepare_image_latents(model, pixels, 2, 3, "sample", np.random.default_rng(5), {})
    b = cogvideox.prepare_image_latents(model, pixels, 2, 3, "sample", np.random.default_rng(5), {})
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0, 0], a[1, 0]) and not np.allclose(a[0, 0], mode[0, 0])
    np.testing.assert_array_equal(mode[0], mode[1])


def test_image_preprocessing_equals_diffusers_video_processor(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers.video_processor import VideoProcessor
    from toolkit.preprocess import preprocess_image

    image = write_image(tmp_path / "image.png", height=45, width=31)
    expected = VideoProcessor(vae_scale_factor=8).preprocess(image, height=32, width=48)[0].numpy()
    got = preprocess_image(image, 32, 48)
    assert got.shape == (3, 32, 48) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def i2v_request(cogvideox_i2v_ref, tmp_path):
    from toolkit.pipelines import cogvideox

    folder, _ = cogvideox_i2v_ref("5b-i2v")
    write_image(tmp_path / "image.png")
    request = {"prompt": "a cat", "image": str(tmp_path / "image.png"), "num_frames": 9, "height": 32,
               "width": 48, "num_inference_steps": 2, "max_sequence_length": 16, "strength": 0.8,
               "vae_posterior": "sample"}
    return request, cogvideox.read_configs(folder)


def test_image_to_video_checkpoint_is_recognised(i2v_request):
    from toolkit.pipelines import cogvideox

    request, configs = i2v_request
    assert configs.is_i2v and configs.latent_channels == 4
    r = cogvideox.check_request(request, configs)
    assert r["mode"] == "i2v" and r["image_pixels"].shape == (3, 32, 48)


@pytest.mark.parametrize("changes,message", [
    ({"image": None}, r"image=None: .*CogVideoXImageToVideoPipeline is an image-to-video checkpoint: "
                      r"give image=<path or URL>"),
    ({"image": None, "video": "clip.mp4"}, r"video='clip.mp4': .*image-to-video checkpoint; video-to-video needs "
                                           r"a text-to-video checkpoint"),
    ({"video": "clip.mp4"}, r"video='clip.mp4': given together with image"),
    ({"image": "/nonexistent/cat.png"}, r"image='/nonexistent/cat.png': no such file"),
    ({"height": 64}, r"height/width=\(64, 48\): this checkpoint's learned positional embedding is built for one "
                     r"size \(allowed: 32/48\)"),
])
def test_image_to_video_request_is_refused_with_the_key_named(i2v_request, changes, message):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    request, configs = i2v_request
    with pytest.raises(RequestError, match=message):
        cogvideox.check_request({**request, **changes}, configs)


def test_unreadable_image_file_is_refused(i2v_request, tmp_path):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    request, configs = i2v_request
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(RequestError, match=r"image='.*broken.png': not a readable image"):
        cogvideox.check_request({**request, "image": str(tmp_path / "broken.png")}, configs)


def test_text_to_video_checkpoint_refuses_an_image(cogvideox_ref, tmp_path):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    folder, _ = cogvideox_ref("5b", "CogVideoXDPMScheduler")
    write_image(tmp_path / "image.png")
    request = {"prompt": "a cat", "image": str(tmp_path / "image.png"), "num_frames": 9, "height": 32, "width": 48}
    with pytest.raises(RequestError, match=r"image='.*image.png': CogVideoXPipeline is a text-to-video checkpoint "
                                           r"and takes no image; use an image-to-video checkpoint"):
        cogvideox.check_request(request, cogvideox.read_configs(folder))


@pytest.mark.slow
def test_cli_names_the_missing_image_and_writes_nothing(cogvideox_i2v_ref, tmp_path):
    folder, _ = cogvideox_i2v_ref("5b-i2v")
    proc = generate(f"model.path={folder}", "height=32", "width=48", "num_frames=9",
                    f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0
    assert "image=None: " in proc.stderr and "give image=<path or URL>" in proc.stderr
    assert not (tmp_path / "run" / "frames.npy").exists()
