"""Stable Video Diffusion piece by piece against diffusers on the tiny checkpoint of tests/reference/svd.py: the
spatio-temporal UNet, the VAE encoder and temporal decoder (whole and in chunks), the image conditioning (CLIP
embedding, noise-augmented VAE latent), the micro-conditioning ids, the scheduler and the per-frame guidance.

Tolerance: atol 1e-5 on network outputs (float32; values O(1); measured differences ~1e-6, from MindSpore's and
PyTorch's different summation orders, sin/cos and rsqrt rounding). The micro-conditioning ids and the guidance
combination must agree exactly (the same float32 arithmetic); scheduler tables to rtol 1e-6 (the continuous
timesteps are float32 logs, an ulp apart at most).
"""
import numpy as np
import pytest

ATOL = 1e-5
torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")


@pytest.fixture(scope="module")
def ref(svd_ref):
    return svd_ref()


@pytest.fixture(scope="module")
def model(ref):
    from toolkit.pipelines import svd
    return svd.load(ref[0], jit=False)


def image_file(path, height=40, width=50, seed=0):
    """A non-square RGB png of another size than the output and the CLIP input, so both resizes are exercised."""
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return Image.open(path).convert("RGB")


def unet_inputs(rng, batch, frames, h, w, t=1.3):
    return (rng.standard_normal((batch, frames, 8, h, w)).astype(np.float32), np.full((batch,), t, np.float32),
            rng.standard_normal((batch, 1, 32)).astype(np.float32),
            np.tile(np.array([[6, 127, 0.02]], np.float32), (batch, 1)))


# ---------------------------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("batch,frames,h,w", [(2, 3, 4, 6), (1, 4, 5, 3)], ids=["even", "odd-size"])
def test_unet_matches_diffusers(ref, model, rng, batch, frames, h, w):
    """Two videos folded into the batch; and a latent size that is not a multiple of 2 (the upsampler resizes to
    the skip tensor's size)."""
    import mindspore as ms

    x, t, e, ids = unet_inputs(rng, batch, frames, h, w)
    with torch.no_grad():
        expected = ref[1].unet(torch.from_numpy(x), torch.from_numpy(t)[0], torch.from_numpy(e),
                               torch.from_numpy(ids)).sample.numpy()
    got = model.unet(*(ms.Tensor(a) for a in (x, t, e, ids))).asnumpy()
    assert got.shape == expected.shape == (batch, frames, 4, h, w)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_unet_output_depends_on_each_added_time_id(model, rng):
    """fps, motion bucket and augmentation strength all reach the network (a dropped id would leave it unchanged)."""
    import mindspore as ms

    x, t, e, ids = unet_inputs(rng, 1, 2, 4, 6)
    base = model.unet(*(ms.Tensor(a) for a in (x, t, e, ids))).asnumpy()
    for k in range(3):
        changed = ids.copy()
        changed[0, k] += 3.0
        out = model.unet(*(ms.Tensor(a) for a in (x, t, e, changed))).asnumpy()
        assert np.abs(out - base).max() > 1e-4, f"added time id {k} has no effect"


@pytest.mark.slow
def test_compiled_unet_equals_eager(model, rng):
    import mindspore as ms

    args = [ms.Tensor(a) for a in unet_inputs(rng, 1, 2, 4, 6)]
    np.testing.assert_allclose(ms.jit(model.unet.construct)(*args).asnumpy(), model.unet(*args).asnumpy(),
                               atol=1e-5, rtol=0)


def test_vae_encoder_mode_matches_diffusers(ref, model, rng):
    import mindspore as ms

    images = rng.uniform(-1, 1, (2, 3, 32, 48)).astype(np.float32)
    with torch.no_grad():
        expected = ref[1].vae.encode(torch.from_numpy(images)).latent_dist.mode().numpy()
    got = model.vae.encode(ms.Tensor(images)).mode().asnumpy()
    assert got.shape == expected.shape == (2, 4, 16, 24)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_temporal_decoder_matches_diffusers_for_two_videos(ref, model, rng):
    """Six latents = two videos of three frames: time_conv_out and the temporal resnets must not mix the videos."""
    import mindspore as ms

    z = rng.standard_normal((6, 4, 4, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ref[1].vae.decode(torch.from_numpy(z), num_frames=3).sample.numpy()
    got = model.vae.decode(ms.Tensor(z), 3).asnumpy()
    assert got.shape == (6, 3, 8, 12)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    one_video = model.vae.decode(ms.Tensor(z[:3]), 3).asnumpy()
    np.testing.assert_allclose(one_video, got[:3], atol=ATOL, rtol=0)


def test_temporal_decoder_mid_block_attention_matches_diffusers(rng, tmp_path):
    """layers_per_block=2, as the real SVD VAE: the mid block's attention runs (with 1 it is built but unused)."""
    import mindspore as ms

    from tests.reference import svd as ref
    from tests.reference.unet import load_from_torch
    from toolkit.models.svd import AutoencoderKLTemporalDecoder

    reference = ref.build_vae(seed=3, layers_per_block=2)
    net = load_from_torch(AutoencoderKLTemporalDecoder.from_config(dict(reference.config)), reference, tmp_path)
    z = rng.standard_normal((4, 4, 3, 5)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(z), num_frames=4).sample.numpy()
    np.testing.assert_allclose(net.decode(ms.Tensor(z), 4).asnumpy(), expected, atol=ATOL, rtol=0)


def test_chunked_decode_matches_diffusers_decode_latents(ref, model, rng):
    """Seven frames of two videos in chunks of 4: diffusers decodes the 14 flattened latents 4 at a time, each chunk
    as one clip (so chunks cross the boundary between the videos); so does ``svd.decode``."""
    from toolkit.pipelines import svd

    latents = rng.standard_normal((2, 7, 4, 4, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ref[1].decode_latents(torch.from_numpy(latents), 7, decode_chunk_size=4).numpy()
    got = svd.decode(model, latents, 4)
    assert got.shape == expected.shape == (2, 3, 7, 8, 12)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    whole = svd.decode(model, latents, 14)
    assert np.abs(whole - got).max() > 1e-4  # chunking changes what the temporal layers see


def test_compiled_chunked_decode_matches_diffusers_decode_latents(ref, rng):
    """What the pipeline decodes with by default (runtime.jit=true): the compiled temporal decoder, one graph per
    chunk length (here 4 and 3)."""
    from toolkit.pipelines import svd

    model = svd.load(ref[0], jit=True)
    latents = rng.standard_normal((1, 7, 4, 4, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ref[1].decode_latents(torch.from_numpy(latents), 7, decode_chunk_size=4).numpy()
    np.testing.assert_allclose(svd.decode(model, latents, 4), expected, atol=ATOL, rtol=0)


def _refuse(*args):
    raise AssertionError("the compiled decoder was called for a chunk that does not fit one graph")


def test_chunks_too_large_for_one_graph_decode_eagerly(ref, rng, monkeypatch):
    from toolkit.models import layers
    from toolkit.pipelines import svd

    model = svd.load(ref[0], jit=True)
    model.decode_compiled = _refuse
    monkeypatch.setattr(layers, "COMPILED_PIECES_MAX", 0)
    latents = rng.standard_normal((1, 3, 4, 4, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ref[1].decode_latents(torch.from_numpy(latents), 3, decode_chunk_size=3).numpy()
    np.testing.assert_allclose(svd.decode(model, latents, 3), expected, atol=ATOL, rtol=0)


def test_chunks_too_large_for_one_graph_decode_in_compiled_parts(ref, rng, monkeypatch):
    """A chunk that does not fit one graph while one frame does (real-size chunks): the spatial parts run compiled,
    one frame per call, the temporal halves compiled over the chunk; the frames are diffusers', and the network is
    itself afterwards."""
    from toolkit.pipelines import svd

    model = svd.load(ref[0], jit=True)
    model.decode_compiled = _refuse
    monkeypatch.setattr(svd, "decoder_fits_one_graph", lambda vae, n, h, w: n == 1)
    calls = []
    parts = model.decode_parts.parts
    i = next(i for i, part in enumerate(parts) if part.name == "conv_in")
    parts[i] = parts[i]._replace(graph=lambda *a, graph=parts[i].graph: calls.append(1) or graph(*a))
    latents = rng.standard_normal((1, 3, 4, 4, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ref[1].decode_latents(torch.from_numpy(latents), 3, decode_chunk_size=3).numpy()
    np.testing.assert_allclose(svd.decode(model, latents, 3), expected, atol=ATOL, rtol=0)
    assert len(calls) == 3  # conv_in: one graph call per frame
    assert "conv_in" not in model.vae.decoder.__dict__  # the eager network is restored


REAL_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3,
                latent_channels=4, layers_per_block=2, out_channels=3, sample_size=768, scaling_factor=0.18215)


@pytest.mark.parametrize("kind", ["unet", "vae"])
def test_full_size_networks_have_the_real_checkpoints_parameter_names_and_shapes(kind):
    """SVD / SVD-XT's configs (the UNet's constructor defaults are theirs; the VAE as in their vae/config.json):
    every parameter diffusers would load, with its shape, and no other (built without memory on both sides)."""
    from diffusers import AutoencoderKLTemporalDecoder as TorchVAE
    from diffusers import UNetSpatioTemporalConditionModel as TorchUNet
    from mindspore.nn.utils import no_init_parameters

    from toolkit.models.svd import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    ours, theirs, config = {"unet": (UNetSpatioTemporalConditionModel, TorchUNet, {}),
                            "vae": (AutoencoderKLTemporalDecoder, TorchVAE, REAL_VAE)}[kind]
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in theirs(**config).state_dict().items()}
    with no_init_parameters():
        got = {name: tuple(p.shape) for name, p in ours.from_config(config).parameters_and_names()}
    assert got == expected and len(got) == {"unet": 1428, "vae": 374}[kind]


def test_fp16_variant_files_load_into_float32_networks(svd_ref, rng):
    """The hub's SVD checkpoints ship ``*.fp16.safetensors`` (model.variant=fp16): float16 storage, cast to float32
    on load; the UNet then matches diffusers holding the same float16-rounded weights in float32."""
    import mindspore as ms

    from toolkit.pipelines import svd

    folder, pipe = svd_ref("fp16")
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    assert (folder / "image_encoder" / "model.fp16.safetensors").exists()
    model = svd.load(folder, variant="fp16", jit=False)
    assert all(p.dtype == ms.float32 for net in (model.unet, model.vae, model.image_encoder)
               for p in net.get_parameters())
    x, t, e, ids = unet_inputs(rng, 1, 2, 4, 6)
    with torch.no_grad():
        expected = pipe.unet(torch.from_numpy(x), torch.from_numpy(t)[0], torch.from_numpy(e),
                             torch.from_numpy(ids)).sample.numpy()
    np.testing.assert_allclose(model.unet(*(ms.Tensor(a) for a in (x, t, e, ids))).asnumpy(), expected,
                               atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------- conditioning
def test_image_embeddings_match_diffusers_encode_image(ref, model, tmp_path):
    """The image at its own size -> 224 px CLIP pixels -> image_embeds; batch of 2 (num_videos_per_prompt)."""
    from toolkit.models.clip.preprocess import svd_clip_pixels
    from toolkit.pipelines import svd

    image = image_file(tmp_path / "image.png")
    with torch.no_grad():
        expected = ref[1]._encode_image(image, "cpu", 2, True).numpy()  # [zeros (2, 1, D); embeds (2, 1, D)]
    fe = model.configs.feature_extractor
    got = svd.encode_image(model, svd_clip_pixels(image, fe["image_mean"], fe["image_std"]), 2)
    assert got.shape == (2, 1, 32) and not expected[:2].any()
    np.testing.assert_allclose(got, expected[2:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("height,width", [(32, 48), (16, 16)])
def test_image_latents_match_diffusers_encode_vae_image(ref, model, tmp_path, height, width):
    """Resized to height x width as diffusers' video processor does, encoded, the posterior's mode, unscaled."""
    from toolkit.pipelines import svd
    from toolkit.preprocess import preprocess_image

    image = image_file(tmp_path / "image.png")
    pipe = ref[1]
    pixels = preprocess_image(image, height, width)
    expected_pixels = pipe.video_processor.preprocess(image, height=height, width=width).numpy()
    np.testing.assert_array_equal(pixels[None], expected_pixels)
    with torch.no_grad():
        expected = pipe._encode_vae_image(torch.from_numpy(pixels[None]), "cpu", 1, False).numpy()
    got = svd.image_latents(model, pixels[None], 2, 3)
    assert got.shape == (2, 3, 4, height // 2, width // 2)
    for b in range(2):
        for f in range(3):
            np.testing.assert_allclose(got[b, f], expected[0], atol=ATOL, rtol=0)


def test_noise_augmentation_is_the_first_draw_of_the_run_generator():
    from toolkit.pipelines import svd

    pixels = np.linspace(-1, 1, 3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6)
    rng = np.random.Generator(np.random.PCG64(11))
    got = svd.augmented_image(pixels, 0.1, rng)
    noise = np.random.Generator(np.random.PCG64(11)).standard_normal((1, 3, 4, 6)).astype(np.float32)
    np.testing.assert_array_equal(got, pixels[None] + np.float32(0.1) * noise)
    again = svd.augmented_image(pixels, 0.1, rng)  # the generator moved on
    assert np.abs(again - got).max() > 0.01
    np.testing.assert_array_equal(svd.augmented_image(pixels, 0.0, np.random.default_rng(0)), pixels[None])


@pytest.mark.parametrize("fps,motion_bucket_id,noise_aug_strength", [(7, 127, 0.02), (25, 0, 0.0), (1, 255, 0.5)])
def test_added_time_ids_match_diffusers_with_fps_minus_one(ref, fps, motion_bucket_id, noise_aug_strength):
    """diffusers' pipeline subtracts 1 from fps before ``_get_add_time_ids``; the toolkit's pure function does it."""
    from toolkit.pipelines import svd

    expected = ref[1]._get_add_time_ids(fps - 1, motion_bucket_id, noise_aug_strength, torch.float32, 1, 1,
                                        False).numpy()
    got = svd.added_time_ids(fps, motion_bucket_id, noise_aug_strength)
    assert got.dtype == np.float32 and got[0] == fps - 1
    np.testing.assert_array_equal(got[None], expected)


# ---------------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("steps", [2, 25])
def test_scheduler_from_the_checkpoint_matches_diffusers_tables_and_steps(ref, rng, steps):
    from diffusers import EulerDiscreteScheduler

    from toolkit.loading import read_json
    from toolkit.samplers import build_sampler

    folder, _ = ref
    sched = EulerDiscreteScheduler.from_pretrained(str(folder / "scheduler"))
    sched.set_timesteps(steps)
    sampler = build_sampler(read_json(folder / "scheduler" / "scheduler_config.json"), steps)
    # continuous timesteps 0.25 log(sigma): float32 logs may differ by an ulp (see tests/test_samplers_unet.py)
    np.testing.assert_allclose(sampler.timesteps, sched.timesteps.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sampler.sigmas, sched.sigmas.numpy(), rtol=1e-6, atol=0)
    assert sampler.init_noise_sigma == pytest.approx(float(sched.init_noise_sigma), rel=1e-7)
    assert sampler.sigmas[0] == pytest.approx(700.0) and sampler.timesteps[0] == pytest.approx(0.25 * np.log(700.0))
    x = rng.standard_normal((1, 3, 4, 4, 6)).astype(np.float32)
    out = rng.standard_normal(x.shape).astype(np.float32)
    for i in (0, steps - 1):
        t = sched.timesteps[i]
        sched._step_index = i
        np.testing.assert_allclose(sampler.scale_model_input(x, i), sched.scale_model_input(torch.from_numpy(x), t),
                                   rtol=1e-6, atol=0)
        sched._step_index = i
        expected = sched.step(torch.from_numpy(out), t, torch.from_numpy(x)).prev_sample.numpy()
        np.testing.assert_allclose(sampler.step(out, x, i)[0], expected, rtol=1e-6, atol=1e-6)


def test_frame_guidance_ramp_combines_like_diffusers(rng):
    """torch.linspace(min, max, F) per frame along axis 1 of (B, F, C, h, w), first frame min, last frame max."""
    from toolkit.guidance import cfg_combine, linear_frame_guidance

    cond, uncond = (rng.standard_normal((2, 5, 4, 3, 3)).astype(np.float32) for _ in range(2))
    scale = torch.linspace(1.0, 3.0, 5).unsqueeze(0).repeat(2, 1)[:, :, None, None, None]
    expected = (torch.from_numpy(uncond) + scale * (torch.from_numpy(cond) - torch.from_numpy(uncond))).numpy()
    ramp = linear_frame_guidance(1.0, 3.0, 5)
    assert ramp[0] == 1.0 and ramp[-1] == 3.0
    np.testing.assert_array_equal(cfg_combine(cond, uncond, ramp, frame_axis=1), expected)


def test_micro_conditioning_outside_the_trained_range_warns_but_runs(caplog):
    """Stability's sampling script warns for fps - 1 outside 5..30 and buckets above 255; so does the toolkit."""
    import logging

    from toolkit.pipelines import svd

    r = {"fps": 40, "motion_bucket_id": 300, "noise_aug_strength": None}
    with caplog.at_level(logging.WARNING, logger="toolkit.pipelines.svd"):
        svd.check_micro_conditioning(r)
    assert r == {"fps": 40, "motion_bucket_id": 300, "noise_aug_strength": 0.02}
    assert "fps=40" in caplog.text and "motion_bucket_id=300" in caplog.text
    caplog.clear()
    svd.check_micro_conditioning({"fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.0})
    assert not caplog.text
