"""Stable Video Diffusion image-to-video (SVD, SVD-XT), assembled from the building blocks; diffusers'
StableVideoDiffusionPipeline computes the same things.

What one run does, in order:
1. The conditioning image (a path, a URL, a ``.npy`` of an (H, W, 3) array, or an array) is read once. Its
   CLIP embedding (``image_encoder``; the image at its own size, blurred and bicubically resized to 224 x 224,
   ``toolkit.models.clip.preprocess.svd_clip_pixels``) is the cross-attention context; zeros for the
   unconditional pass.
2. Noise augmentation: the image resized to ``height`` x ``width`` (PIL Lanczos, [-1, 1]) plus
   ``noise_aug_strength * noise`` is encoded by the VAE; the posterior's *mode* (unscaled: SVD does not multiply
   by ``scaling_factor``) is concatenated to the latents on the channel axis at every step, for every frame;
   zeros for the unconditional pass.
3. Micro-conditioning: ``added_time_ids(fps, motion_bucket_id, noise_aug_strength)`` = (fps - 1, motion bucket,
   augmentation strength), embedded by the UNet and added to its timestep embedding (the same for both passes).
4. Euler sampling (the checkpoint's EulerDiscreteScheduler: Karras sigmas up to 700, v-prediction, continuous
   timesteps 0.25 log sigma) with classifier-free guidance whose scale rises linearly across frames from
   ``min_guidance_scale`` (first frame) to ``max_guidance_scale`` (last frame); guidance is on when
   ``max_guidance_scale > 1``, as in diffusers.
5. The latents, divided by ``scaling_factor``, are decoded ``decode_chunk_size`` frames at a time by the temporal
   decoder, which takes the chunk's frame count as its ``num_frames``.

Layout: latents (B, F, C, H/8, W/8), the UNet's and diffusers' layout (and that of a given ``latents``); frames
out (B, F, H, W, 3) in [0, 1].

Randomness, in draw order from the run's generator (numpy PCG64): the augmentation noise (1, 3, H, W) — drawn
even when ``noise_aug_strength`` is 0, so the draws after it do not depend on that knob — then the initial
latents unless ``latents`` is given. diffusers draws the same two tensors in the same order from its torch
generator (the parity tests feed it the same numpy noise).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mindspore as ms
import numpy as np

from toolkit import loading
from toolkit.guidance import linear_frame_guidance
from toolkit.models.base import CompiledParts, compile_network, decoder_fits_one_graph
from toolkit.pipelines.common import (
    RequestError,
    read_model_index,
    Timer,
    check_int,
    check_multiple,
    check_number,
    fail,
    initial_latents,
    load_array,
    video_to_frames,
)
from toolkit.samplers import build_sampler, validate_scheduler
from toolkit.sampling import classifier_free_guidance, randn, sample

log = logging.getLogger(__name__)

COMPONENTS = ("unet", "vae", "image_encoder", "scheduler", "feature_extractor")
VAE_TILING = False  # the temporal decoder has no tiled mode: decode_chunk_size bounds its memory
CLIP_SIZE = (224, 224)  # diffusers' _encode_image resizes to 224 x 224 whatever the encoder's config says
DEFAULTS = dict(height=576, width=1024, num_inference_steps=25, fps=7, motion_bucket_id=127,
                noise_aug_strength=0.02, min_guidance_scale=1.0, max_guidance_scale=3.0)  # diffusers' __call__
# Stability's sampling script warns outside these (generative-models scripts/sampling/simple_video_sample.py)
TRAINED_FPS_ID = (5, 30)
TRAINED_MOTION_BUCKETS = 255
TEXT_KEYS = ("prompt", "prompt_embeds", "negative_prompt", "negative_prompt_embeds", "max_sequence_length",
             "guidance_scale", "use_dynamic_cfg", "video")


def added_time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float) -> np.ndarray:
    """Stable Video Diffusion's micro-conditioning (Blattmann et al. 2023, Sec. 4): the (3,) float32 ids the UNet
    embeds, ``(fps - 1, motion_bucket_id, noise_aug_strength)``. The model was trained on ``fps - 1`` (Stability's
    ``fps_id``), so ``fps`` here is the frame rate of the output video, as in diffusers."""
    return np.array([fps - 1, motion_bucket_id, noise_aug_strength], dtype=np.float32)


@dataclass
class Configs:
    """The checkpoint's JSON files: everything a request is checked against before weights load."""
    folder: Path
    model_index: dict
    unet: dict
    vae: dict
    image_encoder: dict
    scheduler: dict
    feature_extractor: dict

    @property
    def spatial(self) -> int:  # VAE spatial compression
        return 2 ** (len(self.vae.get("block_out_channels", (64,))) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.get("in_channels", 8)) // 2

    @property
    def num_frames(self) -> int:
        return int(self.unet.get("num_frames", 25))


def read_configs(folder: Path) -> Configs:
    from toolkit.models.clip.preprocess import read_image_processor_config

    folder = Path(folder)
    index = read_model_index(folder, COMPONENTS, "Stable Video Diffusion")
    try:
        feature_extractor = read_image_processor_config(folder)
    except FileNotFoundError as e:
        raise loading.CheckpointError(str(e)) from None
    cfg = Configs(folder=folder, model_index=index, unet=loading.read_config(folder, "unet"),
                  vae=loading.read_config(folder, "vae"), image_encoder=loading.read_config(folder, "image_encoder"),
                  scheduler=loading.read_json(folder / "scheduler" / "scheduler_config.json"),
                  feature_extractor=feature_extractor)
    u = cfg.unet
    ids = int(u.get("addition_time_embed_dim", 256)) * 3
    if ids != int(u.get("projection_class_embeddings_input_dim", 768)):
        raise loading.CheckpointError(
            f"{folder}/unet/config.json: projection_class_embeddings_input_dim="
            f"{u.get('projection_class_embeddings_input_dim')} but 3 added time ids x addition_time_embed_dim="
            f"{u.get('addition_time_embed_dim')} = {ids}")
    return cfg


def latent_shape(cfg: Configs, batch: int, num_frames: int, height: int, width: int) -> tuple:
    return (batch, num_frames, cfg.latent_channels, height // cfg.spatial, width // cfg.spatial)


def _given(r: dict, key: str, default):
    return default if r.get(key) is None else r[key]


def _describe(source) -> str:
    return f"<array {tuple(np.shape(source))}>" if isinstance(source, np.ndarray) else str(source)


def load_image(source):
    """The conditioning image as a PIL RGB image: a path or URL of an image file, a ``.npy`` of an (H, W, 3)
    array, or an array (uint8, or float in [0, 1]). Failures are RequestErrors naming ``image``."""
    from toolkit import io as tio

    try:
        if isinstance(source, (str, Path)) and str(source).lower().endswith(".npy"):
            p = Path(str(source)).expanduser()
            if not p.is_file():
                fail("image", str(source), "no such file")
            source = np.load(p, allow_pickle=False)
        if isinstance(source, np.ndarray) and (source.ndim != 3 or source.shape[-1] != 3):
            fail("image", _describe(source), "an image array must be (H, W, 3), uint8 or float in [0, 1]")
        return tio.load_image(source, "image")
    except RequestError:
        raise
    except Exception as e:  # unreadable files, bad downloads, broken .npy
        msg = str(e)
        raise RequestError(msg if msg.startswith("image=") else
                           f"image={_describe(source)!r}: not a readable image ({msg})") from None


def check_request(req: dict, cfg: Configs) -> dict:
    """Validate and complete a request against the checkpoint's configs. Raises RequestError naming the key and
    the allowed values; reads the image (so an unreadable one fails here) but loads no weights."""
    from toolkit.models.clip.preprocess import svd_clip_pixels
    from toolkit.preprocess import preprocess_image

    r = dict(req)
    for key in TEXT_KEYS:
        value = r.get(key)
        if value is not None and value is not False and value != "" and value != []:
            hint = {"guidance_scale": "use min_guidance_scale / max_guidance_scale (a per-frame ramp)",
                    "use_dynamic_cfg": "the guidance ramps across frames: min_guidance_scale / max_guidance_scale",
                    "video": "give image=<path, URL or .npy>"}.get(key, "it is conditioned on the image only")
            fail(key, value if not isinstance(value, np.ndarray) else _describe(value),
                 f"Stable Video Diffusion takes no {key}; {hint}")
    if r.get("vae_posterior", "mode") != "mode":
        fail("vae.posterior", r["vae_posterior"], "Stable Video Diffusion conditions on the VAE posterior's mode "
             "(as diffusers and Stability's reference code do)", ["mode"])
    if (r.get("vae_tiling") or {}).get("enabled"):
        fail("vae.tiling", True, "the temporal VAE decoder has no tiled mode; lower decode_chunk_size to save "
             "memory instead", [False])

    r["height"] = check_multiple("height", _given(r, "height", DEFAULTS["height"]), cfg.spatial, "VAE compression")
    r["width"] = check_multiple("width", _given(r, "width", DEFAULTS["width"]), cfg.spatial, "VAE compression")
    r["num_frames"] = check_int("num_frames", _given(r, "num_frames", cfg.num_frames), 1)
    r["num_inference_steps"] = check_int("num_inference_steps",
                                         _given(r, "num_inference_steps", DEFAULTS["num_inference_steps"]), 1)
    r["num_videos_per_prompt"] = check_int("num_videos_per_prompt", _given(r, "num_videos_per_prompt", 1), 1)
    r["decode_chunk_size"] = check_int("decode_chunk_size", _given(r, "decode_chunk_size", r["num_frames"]), 1)
    check_micro_conditioning(r)
    r["min_guidance_scale"] = check_number("min_guidance_scale",
                                           _given(r, "min_guidance_scale", DEFAULTS["min_guidance_scale"]), 0.0)
    r["max_guidance_scale"] = check_number("max_guidance_scale",
                                           _given(r, "max_guidance_scale", DEFAULTS["max_guidance_scale"]), 0.0)
    if r["min_guidance_scale"] > r["max_guidance_scale"]:
        fail("min_guidance_scale", r["min_guidance_scale"],
             f"is above max_guidance_scale={r['max_guidance_scale']} (the scale rises from min at the first frame "
             "to max at the last)", f"<= {r['max_guidance_scale']}")
    if r.get("scheduler"):
        try:
            validate_scheduler(r["scheduler"].get("_class_name") or cfg.scheduler["_class_name"],
                               {k: v for k, v in r["scheduler"].items() if k != "_class_name"})
        except ValueError as e:
            raise RequestError(f"scheduler: {e}") from None

    if r.get("image") is None:
        fail("image", None, "Stable Video Diffusion animates an image: give image=<path, URL or .npy of (H, W, 3)>")
    image = load_image(r["image"])
    fe = cfg.feature_extractor
    r["clip_pixels"] = svd_clip_pixels(image, fe["image_mean"], fe["image_std"], CLIP_SIZE)
    r["image_pixels"] = preprocess_image(image, r["height"], r["width"])

    r["batch_size"] = r["num_videos_per_prompt"]
    shape = latent_shape(cfg, r["batch_size"], r["num_frames"], r["height"], r["width"])
    if isinstance(r.get("latents"), np.ndarray):
        if r["latents"].shape != shape:
            fail("latents", f"array {r['latents'].shape}", f"expected shape {shape}")
    elif r.get("latents") is not None:
        r["latents"] = load_array("latents", r["latents"], shape)
    return r


def check_micro_conditioning(r: dict) -> None:
    """fps >= 1 (the model sees fps - 1), motion_bucket_id >= 0, both integers; noise_aug_strength >= 0.
    Values outside what SVD was trained on (fps - 1 in 5..30, buckets up to 255) only warn, as Stability's
    sampling script does."""
    r["fps"] = check_int("fps", _given(r, "fps", DEFAULTS["fps"]), 1)
    r["motion_bucket_id"] = check_int("motion_bucket_id",
                                      _given(r, "motion_bucket_id", DEFAULTS["motion_bucket_id"]), 0)
    r["noise_aug_strength"] = check_number("noise_aug_strength",
                                           _given(r, "noise_aug_strength", DEFAULTS["noise_aug_strength"]), 0.0)
    lo, hi = TRAINED_FPS_ID
    if not lo <= r["fps"] - 1 <= hi:
        log.warning("fps=%d: the model sees fps - 1 = %d, outside the %d..%d it was trained on; expect poorer "
                    "results", r["fps"], r["fps"] - 1, lo, hi)
    if r["motion_bucket_id"] > TRAINED_MOTION_BUCKETS:
        log.warning("motion_bucket_id=%d is above %d, the highest bucket SVD was trained on",
                    r["motion_bucket_id"], TRAINED_MOTION_BUCKETS)


@dataclass
class StableVideoDiffusion:
    """A loaded SVD checkpoint: its configs and the networks (MindSpore Cells)."""
    configs: Configs
    unet: Any
    vae: Any
    image_encoder: Any
    dtype: Any = ms.float32
    forward: Callable = None  # the (possibly jit-compiled) UNet call
    decode_compiled: Callable | None = None  # compile_network(vae) with runtime.jit=true: (latents, num_frames)
    decode_parts: Any = None  # base.CompiledParts of the decoder (per-frame and per-clip parts), runtime.jit=true
    embed_cache: dict = field(default_factory=dict)  # CLIP image embeddings by image content


def load(folder: Path, dtype=ms.float32, variant: str | None = None, jit: bool = True) -> StableVideoDiffusion:
    from toolkit.models.clip import CLIPVisionModelWithProjection
    from toolkit.models.svd import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    cfg = read_configs(folder)
    unet, _ = loading.build_and_load(UNetSpatioTemporalConditionModel, folder, "unet", variant, dtype)
    vae, _ = loading.build_and_load(AutoencoderKLTemporalDecoder, folder, "vae", variant, dtype)
    image_encoder, _ = loading.build_and_load(CLIPVisionModelWithProjection, folder, "image_encoder", variant, dtype)
    forward = compile_network(unet) if jit else unet
    # compiled, the temporal decoder runs 1.6-1.7x faster than eagerly (one compile per chunk length: seconds)
    decode_compiled = compile_network(vae) if jit else None
    parts = CompiledParts(vae.decoder.compiled_parts()) if jit else None
    return StableVideoDiffusion(cfg, unet, vae, image_encoder, dtype, forward, decode_compiled, parts)


def encode_image(model: StableVideoDiffusion, clip_pixels: np.ndarray, batch: int) -> np.ndarray:
    """CLIP image embeddings (batch, 1, projection_dim), cached per image content."""
    key = (hashlib.sha1(np.ascontiguousarray(clip_pixels).tobytes()).hexdigest(), clip_pixels.shape)
    if key not in model.embed_cache:
        embeds = model.image_encoder(ms.Tensor(np.ascontiguousarray(clip_pixels, np.float32)))[0]
        model.embed_cache[key] = embeds.asnumpy().astype(np.float32)[:, None]
    embeds = model.embed_cache[key]
    return np.ascontiguousarray(np.broadcast_to(embeds, (batch,) + embeds.shape[1:]))


def augmented_image(image_pixels: np.ndarray, noise_aug_strength: float, rng: np.random.Generator) -> np.ndarray:
    """(1, 3, H, W): the image plus ``noise_aug_strength`` times standard-normal noise drawn from ``rng`` (always
    drawn, also for strength 0, so later draws keep their place)."""
    x = image_pixels[None].astype(np.float32)
    noise = randn(rng, x.shape)
    return (x + np.float32(noise_aug_strength) * noise).astype(np.float32)


def image_latents(model: StableVideoDiffusion, pixels: np.ndarray, batch: int, num_frames: int) -> np.ndarray:
    """The UNet's image input (batch, F, C, h, w): the VAE posterior's mode of ``pixels`` (1, 3, H, W), unscaled,
    repeated for every video and frame."""
    z = model.vae.encode(ms.Tensor(np.ascontiguousarray(pixels, np.float32))).mode().asnumpy()
    return np.ascontiguousarray(np.broadcast_to(z[:, None], (batch, num_frames) + z.shape[1:]), dtype=np.float32)


def generate(model: StableVideoDiffusion, r: dict, rng: np.random.Generator, timer: Timer | None = None,
             callback=None, progress: bool = True) -> np.ndarray:
    """Frames (B, F, H, W, 3) float32 in [0, 1] for a request already completed by ``check_request``."""
    timer = timer or Timer()
    cfg = model.configs
    b, f = r["batch_size"], r["num_frames"]
    with timer("encode_image"):
        embeds = encode_image(model, r["clip_pixels"], b)
        latents_image = image_latents(model, augmented_image(r["image_pixels"], r["noise_aug_strength"], rng), b, f)
    ids = np.broadcast_to(added_time_ids(r["fps"], r["motion_bucket_id"], r["noise_aug_strength"]), (b, 3))
    ids = np.ascontiguousarray(ids)
    cond = (embeds, latents_image, ids)
    uncond = (np.zeros_like(embeds), np.zeros_like(latents_image), ids)

    scheduler_config = dict(cfg.scheduler)
    overrides = {k: v for k, v in (r.get("scheduler") or {}).items() if v is not None}
    if overrides.get("_class_name"):
        scheduler_config["_class_name"] = overrides.pop("_class_name")
    sampler = build_sampler(scheduler_config, r["num_inference_steps"], overrides)
    shape = latent_shape(cfg, b, f, r["height"], r["width"])
    x = initial_latents(shape, r.get("latents"), rng, sampler.init_noise_sigma)

    def net(x, t, cond):
        embeds, image, ids = cond
        inp = np.concatenate([x, image], axis=2)  # [noisy latents | image latents] on channels
        ts = ms.Tensor(np.full((x.shape[0],), t, np.float32))
        out = model.forward(ms.Tensor(inp), ts, ms.Tensor(embeds), ms.Tensor(ids))
        return out.asnumpy().astype(np.float32)

    scales = linear_frame_guidance(r["min_guidance_scale"], r["max_guidance_scale"], f)
    guided = r["max_guidance_scale"] > 1.0  # diffusers: do_classifier_free_guidance = max(scale) > 1
    model_fn = classifier_free_guidance(net, cond, uncond if guided else None, lambda i, t: scales, frame_axis=1,
                                        batched=r.get("batch_guidance", True))
    with timer("denoise"):
        x = sample(model_fn, x, sampler, rng=rng, callback=callback, progress=progress)
    with timer("decode"):
        video = decode(model, x, r["decode_chunk_size"])
    return video_to_frames(video)


def decode(model: StableVideoDiffusion, latents: np.ndarray, decode_chunk_size: int) -> np.ndarray:
    """Latents (B, F, C, h, w) -> video (B, 3, F, H, W) in [-1, 1], as diffusers' ``decode_latents``: the B*F
    latents, divided by ``scaling_factor``, are decoded ``decode_chunk_size`` at a time, each chunk as one clip
    (the temporal decoder's ``num_frames`` is the chunk's length, so its temporal layers see only that chunk and,
    with several videos, a chunk may span two of them — diffusers' behaviour, kept)."""
    b, f = latents.shape[:2]
    sf = np.float32(model.configs.vae.get("scaling_factor", 0.18215))
    flat = (latents.reshape((b * f,) + latents.shape[2:]) / sf).astype(np.float32)
    chunks = []
    for i in range(0, b * f, decode_chunk_size):
        z = flat[i:i + decode_chunk_size]
        n, _, h, w = z.shape
        chunks.append(chunk_decoder(model, n, h, w)(ms.Tensor(np.ascontiguousarray(z)), n).asnumpy())
    frames = np.concatenate(chunks, 0)
    return frames.reshape((b, f) + frames.shape[1:]).transpose(0, 2, 1, 3, 4)


def chunk_decoder(model: StableVideoDiffusion, n: int, h: int, w: int) -> Callable:
    """The temporal decoder for a chunk of n latents of h x w: compiled when the chunk fits one graph
    (``base.decoder_fits_one_graph``: small clips; its temporal layers need the whole chunk in it); else, when one
    frame fits, in compiled parts (spatial layers one frame per graph call, temporal layers over the chunk) joined
    eagerly (real-size chunks, e.g. 14 frames at 576x1024); eager throughout otherwise and with runtime.jit=false."""
    if model.decode_compiled is None:
        return model.vae.decode
    if decoder_fits_one_graph(model.vae, n, h, w):
        return model.decode_compiled
    if decoder_fits_one_graph(model.vae, 1, h, w):
        return model.decode_parts.around(model.vae.decode)
    return model.vae.decode
