"""CogVideoX video-to-video on text-to-video checkpoints: end to end through the command line against diffusers'
CogVideoXVideoToVideoPipeline on the same tiny checkpoints with the same noise, strength 0 as the input's
reconstruction, the frame count taken from the video, and the requests refused.

Both sides take the VAE posterior's mode (``vae.posterior=mode`` here, ``sample_mode="argmax"`` there), and the
noise added to the encoded video is ours (``latents``) and injected into diffusers' ``randn_tensor``.

Tolerance: frames agree to atol 1e-4 (values in [0, 1], float32): VAE encode, two denoising steps and decode
through random networks; measured ~1e-6..1e-5 (MindSpore's exp/tanh and summation order differ slightly from
PyTorch's, see tests/test_cogvideox_pipeline.py).
"""
import json
import logging

import numpy as np
import pytest

from tests.cli import cogvideox_conditioned_frames

ATOL = 1e-4
CASES = [  # (transformer flavour, checkpoint scheduler, dynamic CFG, video frames, strength, output frames)
    ("5b", "CogVideoXDPMScheduler", True, 9, 0.6, 9),  # 4 steps, the last int(4 * 0.6) = 2 kept
    # patch_size_t=2: 13 frames -> 4 latent frames, decoded in chunks of 2 -> 16 frames (diffusers does the same)
    ("1.5", "DDIMScheduler", False, 13, 0.5, 16),
]


def video_frames(n, height=40, width=50, seed=0) -> np.ndarray:
    """uint8 (n, H, W, 3): smooth moving gradients plus noise, another size than the output."""
    if n == 0:
        return np.zeros((0, height, width, 3), np.uint8)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = [np.stack([(x * 5 + 9 * t) % 256, (y * 6 + 3 * t) % 256, ((x + y) * 3) % 256], -1) for t in range(n)]
    return np.clip(np.stack(frames) + rng.integers(-20, 20, (n, height, width, 3)), 0, 255).astype(np.uint8)


def as_pil(frames):
    from PIL import Image
    return [Image.fromarray(f) for f in frames]


@pytest.mark.slow
@pytest.mark.parametrize("flavour,scheduler,dynamic,n,strength,out", CASES)
def test_frames_match_diffusers_video_to_video(cogvideox_ref, flavour, scheduler, dynamic, n, strength, out,
                                               tmp_path):
    from tests.reference import cogvideox_i2v as ref
    folder, pipe = cogvideox_ref(flavour, scheduler)
    frames = video_frames(n)
    np.save(tmp_path / "video.npy", frames)
    noise = np.random.default_rng(3).standard_normal((1, (n - 1) // 4 + 1, 4, 4, 6)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    expected = ref.run_v2v(ref.video_to_video(pipe), as_pil(frames), noise, strength, seed=7,
                           num_inference_steps=4, use_dynamic_cfg=dynamic)
    got = cogvideox_conditioned_frames(folder, tmp_path / "run", f"video={tmp_path / 'video.npy'}",
                         f"latents={tmp_path / 'noise.npy'}", f"strength={strength}", "num_inference_steps=4",
                         "guidance_scale=6.0", f"use_dynamic_cfg={str(dynamic).lower()}")
    assert got.shape == expected.shape == (out, 32, 48, 3)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["resolved"]["mode"] == "v2v" and record["resolved"]["num_frames"] == n
    assert len(record["steps"]) == int(4 * strength)


@pytest.mark.slow
def test_strength_zero_returns_the_input_reconstruction(cogvideox_ref, tmp_path):
    from tests.reference import cogvideox_i2v as ref
    folder, pipe = cogvideox_ref("5b", "CogVideoXDPMScheduler")
    frames = video_frames(9, seed=1)
    np.save(tmp_path / "video.npy", frames)
    got = cogvideox_conditioned_frames(folder, tmp_path / "run", f"video={tmp_path / 'video.npy'}", "strength=0",
                         "num_inference_steps=4")
    expected = ref.reconstruction(pipe.vae, as_pil(frames))
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["steps"] == []


# ------------------------------------------------------------------------------ request checks (no weights)
@pytest.fixture
def t2v(cogvideox_ref):
    """flavour -> configs of a text-to-video checkpoint."""
    from toolkit.pipelines import cogvideox
    return lambda flavour="5b": cogvideox.read_configs(cogvideox_ref(
        flavour, "DDIMScheduler" if flavour == "1.5" else "CogVideoXDPMScheduler")[0])


def v2v_request(video, **changes):
    return {"prompt": "a cat", "video": video, "num_frames": 49, "height": 32, "width": 48, "strength": 0.8,
            "vae_posterior": "sample", **changes}


@pytest.mark.parametrize("flavour,available,kept", [("5b", 9, 9), ("5b", 11, 9), ("5b", 2, 1),
                                                    ("1.5", 13, 13), ("1.5", 9, 5), ("1.5", 16, 13)])
def test_num_frames_comes_from_the_video_trimmed_to_a_length_the_model_takes(t2v, flavour, available, kept,
                                                                             tmp_path, caplog):
    from toolkit.pipelines import cogvideox

    np.save(tmp_path / "video.npy", video_frames(available))
    with caplog.at_level(logging.WARNING, logger="toolkit.pipelines.cogvideox"):
        r = cogvideox.check_request(v2v_request(str(tmp_path / "video.npy")), t2v(flavour))
    assert r["mode"] == "v2v" and r["num_frames"] == kept
    assert r["video_pixels"].shape == (3, kept, 32, 48)
    trimmed = [m for m in caplog.messages if "trimmed" in m]
    assert trimmed == ([] if kept == available else [trimmed[0]])
    if kept != available:
        assert f"{available} frames trimmed to the first {kept}" in trimmed[0]


def test_video_pixels_are_the_first_frames_resized_as_diffusers_does(t2v, tmp_path):
    pytest.importorskip("diffusers")
    from diffusers.video_processor import VideoProcessor
    from toolkit.pipelines import cogvideox

    frames = video_frames(11)
    np.save(tmp_path / "video.npy", frames)
    r = cogvideox.check_request(v2v_request(str(tmp_path / "video.npy")), t2v())
    expected = VideoProcessor(vae_scale_factor=8).preprocess_video(as_pil(frames[:9]), height=32, width=48)[0]
    np.testing.assert_array_equal(r["video_pixels"], expected.numpy())


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_mp4_and_gif_inputs_are_read(t2v, suffix, tmp_path):
    from toolkit import io as tio
    from toolkit.pipelines import cogvideox

    path = tmp_path / f"video{suffix}"
    (tio.export_to_video if suffix == ".mp4" else tio.export_to_gif)(video_frames(9, 48, 64), path)
    r = cogvideox.check_request(v2v_request(str(path)), t2v())
    assert r["num_frames"] == 9 and r["video_pixels"].shape == (3, 9, 32, 48)
    assert -1.0 <= r["video_pixels"].min() < r["video_pixels"].max() <= 1.0


@pytest.mark.parametrize("strength", [1.5, -0.1])
def test_strength_outside_zero_one_is_refused(t2v, strength, tmp_path):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    np.save(tmp_path / "video.npy", video_frames(9))
    with pytest.raises(RequestError, match=rf"strength={strength}: must be in \[0, 1\]"):
        cogvideox.check_request(v2v_request(str(tmp_path / "video.npy"), strength=strength), t2v())


def test_image_and_video_together_are_refused(t2v, tmp_path):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    with pytest.raises(RequestError, match=r"video='clip.mp4': given together with image; give image=.* not both"):
        cogvideox.check_request(v2v_request("clip.mp4", image="cat.png"), t2v())


@pytest.mark.parametrize("flavour,available,message", [
    ("1.5", 4, r"has 4 frames; this checkpoint needs at least 5 \(2 latent frames, one temporal patch of "
               r"patch_size_t=2\)"),
    ("5b", 0, r"has 0 frames; this checkpoint needs at least 1 \(one latent frame\)"),
])
def test_video_shorter_than_the_model_needs_is_refused(t2v, flavour, available, message, tmp_path):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    np.save(tmp_path / "video.npy", video_frames(available))
    with pytest.raises(RequestError, match=r"video='.*video.npy': " + message):
        cogvideox.check_request(v2v_request(str(tmp_path / "video.npy")), t2v(flavour))


@pytest.mark.parametrize("name,content,message", [
    ("missing.mp4", None, r"no such file"),
    ("broken.mp4", b"\x00\x01 not a video", r"not a readable video"),
    ("broken.npy", b"not numpy", r"not readable"),
    ("clip.txt", b"hello", r"unknown video format '.txt'"),
])
def test_unreadable_video_file_is_refused(t2v, name, content, message, tmp_path):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(RequestError, match=rf"video='.*{name}': .*{message}"):
        cogvideox.check_request(v2v_request(str(tmp_path / name)), t2v())


def test_noise_of_the_wrong_shape_is_refused(t2v, tmp_path):
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import RequestError

    np.save(tmp_path / "video.npy", video_frames(9))
    np.save(tmp_path / "noise.npy", np.zeros((1, 13, 4, 4, 6), np.float32))
    with pytest.raises(RequestError, match=r"latents=.*shape \(1, 13, 4, 4, 6\), expected \(1, 3, 4, 4, 6\)"):
        cogvideox.check_request(v2v_request(str(tmp_path / "video.npy"), latents=str(tmp_path / "noise.npy")),
                                t2v())
