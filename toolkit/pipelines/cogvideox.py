"""CogVideoX text-to-video, image-to-video and video-to-video, assembled from the building blocks
(diffusers' CogVideoXPipeline, CogVideoXImageToVideoPipeline and CogVideoXVideoToVideoPipeline compute the
same things; this module is the family's whole assembly).

Layout: CogVideoX's transformer takes latents as (B, F, C, H, W); the VAE takes (B, C, F, H, W). The
pipeline keeps (B, F, C, H, W) — the layout of the user-facing ``latents`` — and permutes at the VAE.

Modes (``request["mode"]``, set by ``check_request``):
- "t2v": a text-to-video checkpoint, no image or video;
- "i2v": an image-to-video checkpoint (transformer ``in_channels`` = 2 x the VAE's latent channels;
  ``model_index.json`` names CogVideoXImageToVideoPipeline) and ``image``. The image's latent sits at latent
  frame 0 of a zero "image latent video" that is concatenated to the noisy latents on the channel axis at
  every step; ``latents`` is the initial noise, as for text-to-video;
- "v2v": a text-to-video checkpoint and ``video``. The video is encoded, noised to the first of the last
  ``int(steps * strength)`` timesteps and denoised from there (SDEdit); ``latents`` is the noise added.

Randomness, in draw order from the run's generator (numpy PCG64): the VAE posterior noise when
``vae_posterior="sample"`` (shape (B, C, F_latent, H/8, W/8), one draw for the whole batch), then the initial
noise (text/image-to-video) or the noise added to the encoded video (video-to-video) unless ``latents`` is
given, then the sampler's per-step noise. diffusers draws the same things in the same order from a torch
generator, so sampled posteriors cannot match it bit for bit; ``vae.posterior=mode`` makes the conditioning
noise-free (the parity tests use it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import mindspore as ms
import numpy as np

from toolkit import loading
from toolkit.guidance import cogvideox_dynamic_guidance
from toolkit.models.base import compile_network
from toolkit.models.layers import layer_norms_by_batch_norm
from toolkit.pipelines.common import (RequestError, Timer, check_choice, check_int, check_multiple, check_number,
                                      check_prompts, fail, initial_latents, load_array, read_model_index,
                                      sampler_from_strength, video_to_frames)
from toolkit.sampling import classifier_free_guidance, randn, sample
from toolkit.samplers import build_sampler, validate_scheduler

log = logging.getLogger(__name__)

COMPONENTS = ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")
I2V_PIPELINE = "CogVideoXImageToVideoPipeline"
OFS = 2.0  # the "ofs" value diffusers' image-to-video pipeline feeds CogVideoX 1.5 I2V's ofs embedding


@dataclass
class Configs:
    """The checkpoint's JSON files: everything a request is checked against before weights load."""
    folder: Path
    model_index: dict
    transformer: dict
    vae: dict
    scheduler: dict

    @property
    def spatial(self) -> int:  # VAE spatial compression
        return 2 ** (len(self.vae.get("block_out_channels", (128, 256, 256, 512))) - 1)

    @property
    def temporal(self) -> int:
        return int(self.vae.get("temporal_compression_ratio", 4))

    @property
    def patch_size(self) -> int:
        return int(self.transformer.get("patch_size", 2))

    @property
    def patch_size_t(self) -> Optional[int]:
        return self.transformer.get("patch_size_t")

    @property
    def is_i2v(self) -> bool:
        """An image-to-video checkpoint: the transformer also takes the image latents on the channel axis."""
        return (self.model_index.get("_class_name") == I2V_PIPELINE
                or int(self.transformer.get("in_channels", 16)) == 2 * int(self.vae.get("latent_channels", 16)))

    @property
    def latent_channels(self) -> int:
        c = int(self.transformer.get("in_channels", 16))
        return c // 2 if self.is_i2v else c


def read_configs(folder: Path) -> Configs:
    folder = Path(folder)
    index = read_model_index(folder, COMPONENTS, "CogVideoX")
    return Configs(folder=folder, model_index=index,
                   transformer=loading.read_config(folder, "transformer"),
                   vae=loading.read_config(folder, "vae"),
                   scheduler=loading.read_json(folder / "scheduler" / "scheduler_config.json"))


def latent_frames(cfg: Configs, num_frames: int) -> tuple[int, int]:
    """(latent frames including padding, padding frames) — CogVideoX 1.5 pads to a multiple of patch_size_t."""
    f = (num_frames - 1) // cfg.temporal + 1
    pad = 0
    if cfg.patch_size_t and f % cfg.patch_size_t:
        pad = cfg.patch_size_t - f % cfg.patch_size_t
    return f + pad, pad


DECODE_CHUNK = 2  # latent frames per VAE decode chunk, as diffusers' AutoencoderKLCogVideoX


def decoded_frames(cfg: Configs, num_frames: int) -> int:
    """Frames the VAE returns for a ``num_frames`` request: an odd-sized chunk of k latent frames decodes
    to temporal*(k-1)+1 frames, an even one to temporal*k (49 -> 49, but 13 -> 16)."""
    from toolkit.models.causal_conv import frame_chunks

    latent = (num_frames - 1) // cfg.temporal + 1
    sizes = [min(e, latent) - s for s, e in frame_chunks(latent, DECODE_CHUNK)]
    return sum(cfg.temporal * (k - 1) + 1 if k % 2 else cfg.temporal * k for k in sizes)


def latent_shape(cfg: Configs, batch: int, num_frames: int, height: int, width: int) -> tuple:
    f, _ = latent_frames(cfg, num_frames)
    return (batch, f, cfg.latent_channels, height // cfg.spatial, width // cfg.spatial)


def _given(r: dict, key: str, default):
    return default if r.get(key) is None else r[key]


def check_request(req: dict, cfg: Configs) -> dict:
    """Validate and complete a request against the checkpoint's configs. Raises RequestError naming the
    key and the allowed values; nothing heavy has happened yet."""
    r = dict(req)
    unit = cfg.spatial * cfg.patch_size
    t = cfg.transformer
    if r.get("height") is None:
        r["height"] = int(t.get("sample_height", 60)) * cfg.spatial
    if r.get("width") is None:
        r["width"] = int(t.get("sample_width", 90)) * cfg.spatial
    if r.get("num_frames") is None:
        r["num_frames"] = int(t.get("sample_frames", 49))
    check_multiple("height", r["height"], unit, f"VAE compression {cfg.spatial} x patch size {cfg.patch_size}")
    check_multiple("width", r["width"], unit, f"VAE compression {cfg.spatial} x patch size {cfg.patch_size}")
    if t.get("use_learned_positional_embeddings"):
        size = (int(t.get("sample_height", 60)) * cfg.spatial, int(t.get("sample_width", 90)) * cfg.spatial)
        if (r["height"], r["width"]) != size:
            fail("height/width", (r["height"], r["width"]),
                 "this checkpoint's learned positional embedding is built for one size", [f"{size[0]}/{size[1]}"])
    r["mode"] = check_conditioning(r, cfg)  # video-to-video: num_frames now comes from the video
    n = check_int("num_frames", r["num_frames"], 1)
    if (n - 1) % cfg.temporal:
        k = (n - 1) // cfg.temporal
        fail("num_frames", n, f"must be {cfg.temporal}k+1 (the VAE compresses time by {cfg.temporal})",
             [cfg.temporal * k + 1, cfg.temporal * (k + 1) + 1])
    if r["mode"] != "v2v" and decoded_frames(cfg, n) != n:
        ok = [m for m in range(1, 4 * n + 2 * cfg.temporal, cfg.temporal) if decoded_frames(cfg, m) == m]
        near = sorted(ok, key=lambda m: (abs(m - n), m))[:2]
        fail("num_frames", n, f"the VAE decodes {(n - 1) // cfg.temporal + 1} latent frames in chunks of "
             f"{DECODE_CHUNK} into {decoded_frames(cfg, n)} frames, not {n}", sorted(near))
    r["num_inference_steps"] = check_int("num_inference_steps", _given(r, "num_inference_steps", 50), 1)
    r["guidance_scale"] = check_number("guidance_scale", _given(r, "guidance_scale", 6.0), 0.0)
    r["num_videos_per_prompt"] = check_int("num_videos_per_prompt", _given(r, "num_videos_per_prompt", 1), 1)
    r["max_sequence_length"] = check_int("max_sequence_length", _given(
        r, "max_sequence_length", int(t.get("max_text_seq_length", 226))), 1)
    if not t.get("use_rotary_positional_embeddings") and r["max_sequence_length"] != t.get("max_text_seq_length", 226):
        fail("max_sequence_length", r["max_sequence_length"],
             "this checkpoint's positional embedding is built for a fixed text length",
             [t.get("max_text_seq_length", 226)])
    batch = check_prompts(r, t.get("text_embed_dim", 4096))
    r["batch_size"] = batch * r["num_videos_per_prompt"]
    if r.get("scheduler"):
        validate_scheduler(r["scheduler"].get("_class_name") or cfg.scheduler["_class_name"],
                           {k: v for k, v in r["scheduler"].items() if k != "_class_name"})
    shape = latent_shape(cfg, r["batch_size"], n, r["height"], r["width"])
    if r.get("latents") is not None and not isinstance(r["latents"], np.ndarray):
        r["latents"] = load_array("latents", r["latents"], shape)
    elif isinstance(r.get("latents"), np.ndarray) and r["latents"].shape != shape:
        fail("latents", f"array {r['latents'].shape}", f"expected shape {shape}")
    r["vae_tiling"] = check_tiling(r.get("vae_tiling") or {}, cfg)
    return r


def min_video_frames(cfg: Configs) -> int:
    """Fewest video frames video-to-video takes: one latent frame (one frame), or one temporal patch of
    ``patch_size_t`` latent frames for CogVideoX 1.5 (5 frames)."""
    return cfg.temporal * ((cfg.patch_size_t or 1) - 1) + 1


def accepted_video_frames(cfg: Configs, available: int) -> int:
    """The longest length <= ``available`` the model takes: ``temporal * k + 1`` frames whose latent frame
    count is a multiple of ``patch_size_t`` (diffusers refuses other lengths on CogVideoX 1.5)."""
    p_t = cfg.patch_size_t or 1
    for n in range(available, 0, -1):
        if (n - 1) % cfg.temporal == 0 and ((n - 1) // cfg.temporal + 1) % p_t == 0:
            return n
    return 0


def _describe(source) -> str:
    return f"<array {tuple(np.shape(source))}>" if isinstance(source, np.ndarray) else str(source)


def _read(reader, source, key: str):
    """Read an input with ``toolkit.io``, turning every failure into a RequestError naming the key."""
    try:
        return reader(source, key)
    except ValueError as e:
        msg = str(e)
        raise RequestError(msg if msg.startswith(f"{key}=") else
                           f"{key}={_describe(source)!r}: not readable ({msg})") from None


def check_conditioning(r: dict, cfg: Configs) -> str:
    """The mode ("t2v", "i2v", "v2v") the checkpoint and the request ask for. Checks ``strength`` and
    ``vae_posterior``, reads the image or video (an unreadable file fails here, before any weights load) and
    stores it preprocessed as ``image_pixels`` (3, H, W) or ``video_pixels`` (3, F, H, W), float32 in [-1, 1].
    For video-to-video ``num_frames`` becomes the video's length, trimmed (with a warning) to the longest
    length the model takes."""
    from toolkit import io as tio
    from toolkit.preprocess import preprocess_image, preprocess_video

    strength = _given(r, "strength", 0.8)
    r["strength"] = check_number("strength", strength)
    if not 0.0 <= r["strength"] <= 1.0:
        fail("strength", strength, "must be in [0, 1] (video-to-video: 0 returns the input video's "
             "reconstruction, 1 is pure generation)")
    r["vae_posterior"] = _given(r, "vae_posterior", "sample")
    check_choice("vae.posterior", r["vae_posterior"], ("sample", "mode"))
    image, video = r.get("image"), r.get("video")
    name = cfg.model_index.get("_class_name", "this checkpoint")
    if image is not None and video is not None:
        fail("video", _describe(video), "given together with image; give image=<path or URL> (image-to-video "
             "checkpoint) or video=<file> (video-to-video on a text-to-video checkpoint), not both")
    if cfg.is_i2v:
        if video is not None:
            fail("video", _describe(video), f"{name} is an image-to-video checkpoint; video-to-video needs a "
                 "text-to-video checkpoint (e.g. model=cogvideox_5b)", "image=<path or URL>")
        if image is None:
            fail("image", None, f"{name} is an image-to-video checkpoint: give image=<path or URL>")
        r["image_pixels"] = preprocess_image(_read(tio.load_image, image, "image"), r["height"], r["width"])
        return "i2v"
    if image is not None:
        fail("image", _describe(image), f"{name} is a text-to-video checkpoint and takes no image; use an "
             "image-to-video checkpoint (model=cogvideox_5b_i2v or model=cogvideox1.5_5b_i2v), or "
             "video=<file> for video-to-video")
    if video is None:
        return "t2v"
    frames = _read(tio.load_video, video, "video")
    available, need = len(frames), min_video_frames(cfg)
    if available < need:
        latent = "one latent frame" if need == 1 else \
            f"{cfg.patch_size_t} latent frames, one temporal patch of patch_size_t={cfg.patch_size_t}"
        fail("video", _describe(video), f"has {available} frames; this checkpoint needs at least {need} ({latent})")
    n = accepted_video_frames(cfg, available)
    if n != available:
        log.warning("video=%s: %d frames trimmed to the first %d (the model takes %dk+1 frames%s)",
                    _describe(video), available, n, cfg.temporal,
                    f" with a latent frame count divisible by {cfg.patch_size_t}" if cfg.patch_size_t else "")
    if r.get("num_frames") not in (None, n):
        log.info("num_frames=%s ignored: video-to-video takes the frame count from the video (%d)",
                 r["num_frames"], n)
    r["num_frames"] = n
    r["video_pixels"] = preprocess_video(frames[:n], r["height"], r["width"])
    return "v2v"


def check_tiling(tiling: dict, cfg: Configs) -> dict:
    """Complete the tiling keys (defaults as the VAE's: half its sample size, overlaps 1/6 and 1/5) and
    check that the tiles cover the output exactly (diffusers would silently return a wrong size)."""
    from toolkit.vae_tiling import cogvideox_tile_geometry

    if not tiling.get("enabled"):
        return {"enabled": False}
    t = {"tile_sample_min_height": tiling.get("tile_sample_min_height") or cfg.vae.get("sample_height", 480) // 2,
         "tile_sample_min_width": tiling.get("tile_sample_min_width") or cfg.vae.get("sample_width", 720) // 2,
         "tile_overlap_factor_height": tiling.get("tile_overlap_factor_height") or 1 / 6,
         "tile_overlap_factor_width": tiling.get("tile_overlap_factor_width") or 1 / 5}
    for k in ("tile_sample_min_height", "tile_sample_min_width"):
        check_multiple(f"vae.{k}", t[k], cfg.spatial, "VAE compression")
    try:
        cogvideox_tile_geometry(spatial_ratio=cfg.spatial, **t).check()
    except ValueError as e:
        fail("vae.tile_sample_min_height/width", (t["tile_sample_min_height"], t["tile_sample_min_width"]), str(e))
    return {"enabled": True, **t}


@dataclass
class CogVideoX:
    """A loaded CogVideoX checkpoint: its configs and the networks (MindSpore Cells)."""
    configs: Configs
    tokenizer: Any
    text_encoder: Any
    transformer: Any
    vae: Any
    dtype: Any = ms.float32
    forward: Callable = None  # the (possibly jit-compiled) transformer call
    embed_cache: dict = field(default_factory=dict)


def load(folder: Path, dtype=ms.float32, variant: str | None = None, jit: bool = True) -> CogVideoX:
    from toolkit.models.cogvideox.transformer import CogVideoXTransformer3DModel
    from toolkit.models.cogvideox.vae import AutoencoderKLCogVideoX
    from toolkit.models.t5.encoder import T5EncoderModel
    from toolkit.text import load_tokenizer

    cfg = read_configs(folder)
    tokenizer = load_tokenizer(Path(folder) / "tokenizer")
    text_encoder, _ = loading.build_and_load(T5EncoderModel, folder, "text_encoder", variant, dtype)
    transformer, _ = loading.build_and_load(CogVideoXTransformer3DModel, folder, "transformer", variant, dtype)
    layer_norms_by_batch_norm(transformer)
    vae, _ = loading.build_and_load(AutoencoderKLCogVideoX, folder, "vae", variant, dtype)
    forward = compile_network(transformer) if jit else transformer
    return CogVideoX(cfg, tokenizer, text_encoder, transformer, vae, dtype, forward)


def encode(model: CogVideoX, r: dict) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(prompt_embeds, negative_prompt_embeds or None), cached per distinct text request."""
    from toolkit.text import encode_prompt

    do_cfg = r["guidance_scale"] > 1.0
    if r.get("prompt_embeds") is not None:
        embeds = load_array("prompt_embeds", r["prompt_embeds"])
        neg = load_array("negative_prompt_embeds", r["negative_prompt_embeds"], embeds.shape) \
            if r.get("negative_prompt_embeds") is not None else None
        return encode_prompt(None, None, None, None, do_cfg=do_cfg,
                             num_videos_per_prompt=r["num_videos_per_prompt"], prompt_embeds=embeds,
                             negative_prompt_embeds=neg, max_sequence_length=r["max_sequence_length"])
    key = (repr(r["prompt"]), repr(r.get("negative_prompt")), do_cfg, r["num_videos_per_prompt"],
           r["max_sequence_length"])
    if key not in model.embed_cache:
        model.embed_cache[key] = encode_prompt(
            model.tokenizer, model.text_encoder, r["prompt"], r.get("negative_prompt"), do_cfg=do_cfg,
            num_videos_per_prompt=r["num_videos_per_prompt"], max_sequence_length=r["max_sequence_length"])
    return model.embed_cache[key]


def generate(model: CogVideoX, r: dict, rng: np.random.Generator, timer: Timer | None = None,
             callback=None, progress: bool = True) -> np.ndarray:
    """Frames (B, F, H, W, 3) float32 in [0, 1] for a request already completed by ``check_request``."""
    from toolkit.models.cogvideox.transformer import rotary_tables_for

    timer = timer or Timer()
    cfg = model.configs
    with timer("encode_prompt"):
        cond, uncond = encode(model, r)
    scheduler_config = dict(cfg.scheduler)
    overrides = {k: v for k, v in (r.get("scheduler") or {}).items() if v is not None}
    if overrides.get("_class_name"):
        scheduler_config["_class_name"] = overrides.pop("_class_name")
    sampler = build_sampler(scheduler_config, r["num_inference_steps"], overrides)

    shape = latent_shape(cfg, r["batch_size"], r["num_frames"], r["height"], r["width"])
    mode = r.get("mode", "t2v")
    if mode == "i2v":
        with timer("encode_image"):
            image_latents = prepare_image_latents(model, r["image_pixels"], shape[0], shape[1],
                                                  r["vae_posterior"], rng, r.get("vae_tiling") or {})
        cond, uncond = (cond, image_latents), (None if uncond is None else (uncond, image_latents))
        x = initial_latents(shape, r.get("latents"), rng, sampler.init_noise_sigma)
    elif mode == "v2v":
        with timer("encode_video"):  # scaled by scaling_factor whatever invert_scale_latents says, as diffusers
            z = encode_pixels(model, r["video_pixels"][None], shape[0], r["vae_posterior"], rng,
                              r.get("vae_tiling") or {})
            video_latents = np.float32(cfg.vae.get("scaling_factor", 1.15258426)) * z
        sampler = sampler_from_strength(sampler, r["strength"])
        noise = r["latents"] if r.get("latents") is not None else randn(rng, shape)
        x = sampler.add_noise(video_latents, noise, 0) if sampler.num_steps else video_latents
        x = (x * np.float32(sampler.init_noise_sigma)).astype(np.float32)
    else:
        x = initial_latents(shape, r.get("latents"), rng, sampler.init_noise_sigma)

    rotary = rotary_tables_for(cfg.transformer, shape[1], r["height"] // cfg.spatial, r["width"] // cfg.spatial)
    ofs = ms.Tensor(np.array([OFS], np.float32)) if cfg.transformer.get("ofs_embed_dim") else None

    def net(x, t, cond):
        text, image = cond if isinstance(cond, tuple) else (cond, None)
        if image is not None:  # image-to-video: [noisy latents | image latents] on the channel axis
            x = np.concatenate([x, image], axis=2)
        ts = ms.Tensor(np.full((x.shape[0],), t, np.float32))
        out = model.forward(ms.Tensor(x), ms.Tensor(text), ts, *rotary, ofs)
        return out.asnumpy().astype(np.float32)

    scale = r["guidance_scale"]
    steps = sampler.num_steps  # video-to-video: the kept steps, as diffusers' dynamic CFG counts them
    if r.get("use_dynamic_cfg"):
        scale_fn = lambda i, t: cogvideox_dynamic_guidance(scale, float(t), steps)  # noqa: E731
    else:
        scale_fn = lambda i, t: scale  # noqa: E731
    model_fn = classifier_free_guidance(net, cond, uncond if scale > 1.0 else None, scale_fn,
                                        batched=r.get("batch_guidance", True))
    with timer("denoise"):
        x = sample(model_fn, x, sampler, rng=rng, callback=callback, progress=progress)
    with timer("decode"):
        _, pad = latent_frames(cfg, r["num_frames"])
        video = decode(model, x[:, pad:], r.get("vae_tiling") or {})
    return video_to_frames(video)


def encode_pixels(model: CogVideoX, pixels: np.ndarray, batch: int, posterior: str, rng: np.random.Generator,
                  tiling: dict) -> np.ndarray:
    """Pixels (1, 3, F, H, W) in [-1, 1] -> unscaled latents (batch, F_latent, C, h, w): the VAE posterior's
    mode, or a sample with noise (batch, C, F_latent, h, w) drawn from ``rng`` (one draw for the batch, so
    every video gets its own sample of the one input's posterior)."""
    x = ms.Tensor(np.ascontiguousarray(pixels, dtype=np.float32))
    if tiling.get("enabled"):
        dist = model.vae.encode_tiled(x, **{k: v for k, v in tiling.items() if k != "enabled"})
    else:
        dist = model.vae.encode(x)
    if posterior == "mode":
        z = np.broadcast_to(dist.mode().asnumpy(), (batch,) + tuple(dist.mean.shape[1:]))
    else:
        z = dist.sample(randn(rng, (batch,) + tuple(dist.mean.shape[1:]))).asnumpy()
    return np.ascontiguousarray(z.transpose(0, 2, 1, 3, 4), dtype=np.float32)


def image_condition_latents(image_latents: np.ndarray, num_latent_frames: int) -> np.ndarray:
    """The transformer's image input (B, F, C, h, w): the (already scaled) image latent (B, 1, C, h, w) at latent
    frame 0 and zeros after it (diffusers' CogVideoXImageToVideoPipeline.prepare_latents).

    diffusers then prepends ``F % patch_size_t`` copies of the first frame for CogVideoX 1.5; F is already
    padded to a multiple of patch_size_t (``latent_frames``), so that is always empty and is left out. Note that
    with that padding (an even number of latent frames from an odd one) the image sits on the padding frame,
    which is dropped before decoding — as in diffusers."""
    b, _, c, h, w = image_latents.shape
    pad = np.zeros((b, num_latent_frames - 1, c, h, w), np.float32)
    return np.concatenate([image_latents.astype(np.float32), pad], axis=1)


def prepare_image_latents(model: CogVideoX, image_pixels: np.ndarray, batch: int, num_latent_frames: int,
                          posterior: str, rng: np.random.Generator, tiling: dict) -> np.ndarray:
    """Image (3, H, W) in [-1, 1] -> the transformer's image input (batch, F, C, h, w). The latent is scaled by
    the VAE's ``scaling_factor`` — or divided by it when the VAE config says ``invert_scale_latents`` (CogVideoX
    1.5 I2V was trained so; diffusers' comment: "the CogVideoX team forgot to multiply the scaling factor")."""
    z = encode_pixels(model, image_pixels[None, :, None], batch, posterior, rng, tiling)
    sf = float(model.configs.vae.get("scaling_factor", 1.15258426))
    scale = np.float32(1.0 / sf) if model.configs.vae.get("invert_scale_latents") else np.float32(sf)
    return image_condition_latents(scale * z, num_latent_frames)


def decode(model: CogVideoX, latents: np.ndarray, tiling: dict) -> np.ndarray:
    """Latents (B, F, C, h, w) -> video (B, C, F', H, W) in [-1, 1], untiled or tiled."""
    z = latents.transpose(0, 2, 1, 3, 4) / np.float32(model.configs.vae.get("scaling_factor", 1.15258426))
    z = ms.Tensor(np.ascontiguousarray(z, dtype=np.float32))
    if tiling.get("enabled"):
        out = model.vae.decode_tiled(z, **{k: v for k, v in tiling.items() if k != "enabled"})
    else:
        out = model.vae.decode(z)
    return out.asnumpy()
