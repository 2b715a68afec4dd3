"""AnimateDiff text-to-video: a Stable Diffusion 1.5 checkpoint (``model.path``) animated by a motion adapter
(``model.motion_adapter``), assembled from the building blocks (diffusers' AnimateDiffPipeline computes the same
things; this module is the family's whole assembly).

The two checkpoints are read separately (an SD folder with unet, vae, text_encoder, tokenizer and scheduler; a
MotionAdapter folder) and combined into one motion UNet (``toolkit.models.animatediff``), so any SD 1.5
fine-tune is animated by changing ``model.path``. The scheduler is the SD checkpoint's ``scheduler_config.json``
unless the config swaps the class or overrides keys (``scheduler=...``, ``scheduler.<key>=...``).

Layout: latents (B, C, F, H/f, W/f), diffusers' AnimateDiff layout and the user-facing ``latents``; the UNet takes
that layout and folds frames into its batch itself. Decoding is per frame, ``decode_chunk_size`` frames at a time,
as diffusers' ``decode_latents``.

Randomness, in draw order from the run's generator (numpy PCG64): the initial noise (unless ``latents`` is given),
then a stochastic sampler's per-step noise.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mindspore as ms
import numpy as np

from toolkit import loading
from toolkit.models.base import compile_network, decoder_fits_one_graph, decoder_widest_activation, per_frame
from toolkit.pipelines.common import (RequestError, Timer, check_int, check_multiple, check_number, check_prompts,
                                      fail, initial_latents, load_array, video_to_frames)
from toolkit.sampling import classifier_free_guidance, sample
from toolkit.samplers import build_sampler, validate_scheduler

log = logging.getLogger(__name__)

EXTRA_CHECKPOINTS = ("motion_adapter",)
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
NOT_TAKEN = {  # generate.yaml keys of other families, refused when set
    "image": "AnimateDiff is text-to-video and takes no image",
    "video": "AnimateDiff is text-to-video and takes no input video",
    "use_dynamic_cfg": "CogVideoX's guidance schedule; AnimateDiff uses a constant guidance_scale",
    "max_sequence_length": "the CLIP prompt length is fixed by the tokenizer (model_max_length, 77)",
}


@dataclass
class Configs:
    """The two checkpoints' JSON files: everything a request is checked against before weights load."""
    folder: Path
    adapter_folder: Path
    unet: dict
    vae: dict
    text_encoder: dict
    scheduler: dict
    adapter: dict

    @property
    def spatial(self) -> int:  # VAE spatial compression (8 for SD)
        return 2 ** (len(self.vae.get("block_out_channels", (64,))) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.get("in_channels", 4))

    @property
    def max_frames(self) -> int:
        """The adapter's temporal positional table length: the most frames a motion module can place."""
        return int(self.adapter.get("motion_max_seq_length", 32))

    @property
    def cross_attention_dim(self) -> int:
        d = self.unet.get("cross_attention_dim", 1280)
        return int(d if isinstance(d, int) else d[0])


def read_configs(folder: Path, motion_adapter: Path) -> Configs:
    folder, adapter = Path(folder), Path(motion_adapter)
    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    if missing:
        raise loading.CheckpointError(f"{folder} lacks the component folders {missing}; model.path must be a "
                                      "Stable Diffusion 1.x checkpoint in diffusers format (unet, vae, text_encoder, "
                                      "tokenizer, scheduler)")
    unet = loading.read_config(folder, "unet")
    if unet.get("_class_name") not in (None, "UNet2DConditionModel"):
        raise loading.CheckpointError(f"{folder}/unet is a {unet.get('_class_name')}; model.path must hold a Stable "
                                      "Diffusion UNet2DConditionModel (the motion modules come from "
                                      "model.motion_adapter)")
    adapter_config = loading.read_config(adapter)
    if adapter_config.get("_class_name") not in (None, "MotionAdapter"):
        raise loading.CheckpointError(f"model.motion_adapter={str(adapter)!r} holds a "
                                      f"{adapter_config.get('_class_name')}, not a MotionAdapter")
    return Configs(folder=folder, adapter_folder=adapter, unet=unet, vae=loading.read_config(folder, "vae"),
                   text_encoder=loading.read_config(folder, "text_encoder"),
                   scheduler=loading.read_json(folder / "scheduler" / "scheduler_config.json"),
                   adapter=adapter_config)


def latent_shape(cfg: Configs, batch: int, num_frames: int, height: int, width: int) -> tuple:
    return (batch, cfg.latent_channels, num_frames, height // cfg.spatial, width // cfg.spatial)


def _given(r: dict, key: str, default):
    return default if r.get(key) is None else r[key]


def check_request(req: dict, cfg: Configs) -> dict:
    """Validate and complete a request against the two checkpoints' configs. Raises RequestError naming the key
    and the allowed values; nothing heavy has happened yet."""
    from toolkit.models.animatediff.unet_motion import adapter_layout_mismatches, motion_unet_config

    r = dict(req)
    for key, why in NOT_TAKEN.items():
        if r.get(key) not in (None, False):
            fail(key, r[key], why)
    problems = adapter_layout_mismatches(cfg.unet, cfg.adapter)
    if problems:
        fail("model.motion_adapter", str(cfg.adapter_folder),
             "its block layout does not match the UNet of model.path: " + "; ".join(problems))
    try:
        motion_unet_config(cfg.unet, cfg.adapter)
    except ValueError as e:
        fail("model.path", str(cfg.folder), str(e))

    size = int(cfg.unet.get("sample_size", 64)) * cfg.spatial  # diffusers' default size
    multiple = max(8, cfg.spatial)
    for key in ("height", "width"):
        r[key] = check_multiple(key, _given(r, key, size), multiple, f"VAE compression {cfg.spatial}; diffusers "
                                "requires multiples of 8")
    r["num_frames"] = check_int("num_frames", _given(r, "num_frames", 16), 1)
    if r["num_frames"] > cfg.max_frames:
        fail("num_frames", r["num_frames"], f"the motion adapter places at most {cfg.max_frames} frames "
             "(its motion_max_seq_length, the length of its temporal positional table)", f"1..{cfg.max_frames}")
    r["num_inference_steps"] = check_int("num_inference_steps", _given(r, "num_inference_steps", 50), 1)
    r["guidance_scale"] = check_number("guidance_scale", _given(r, "guidance_scale", 7.5), 0.0)
    r["num_videos_per_prompt"] = check_int("num_videos_per_prompt", _given(r, "num_videos_per_prompt", 1), 1)
    r["decode_chunk_size"] = check_int("decode_chunk_size", _given(r, "decode_chunk_size", 16), 1)
    layers = int(cfg.text_encoder.get("num_hidden_layers", 12))
    if r.get("clip_skip") is not None:
        r["clip_skip"] = check_int("clip_skip", r["clip_skip"], 0)
        if r["clip_skip"] > layers:
            fail("clip_skip", r["clip_skip"], f"the text encoder has {layers} layers", f"0..{layers} or null")

    batch = check_prompts(r, cfg.cross_attention_dim)
    r["batch_size"] = batch * r["num_videos_per_prompt"]

    r["scheduler"] = check_scheduler(r.get("scheduler") or {}, cfg, r["num_inference_steps"])
    shape = latent_shape(cfg, r["batch_size"], r["num_frames"], r["height"], r["width"])
    if r.get("latents") is not None and not isinstance(r["latents"], np.ndarray):
        r["latents"] = load_array("latents", r["latents"], shape)
    elif isinstance(r.get("latents"), np.ndarray) and r["latents"].shape != shape:
        fail("latents", f"array {r['latents'].shape}", f"expected shape {shape} (B, C, F, H/{cfg.spatial}, "
             f"W/{cfg.spatial})")
    r["vae_tiling"] = check_tiling(r.get("vae_tiling") or {}, cfg)
    return r


def check_scheduler(overrides: dict, cfg: Configs, steps: int) -> dict:
    """The scheduler overrides, checked (class name, keys, values) by building the sampler's tables once."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    name = overrides.get("_class_name") or cfg.scheduler.get("_class_name")
    keys = {k: v for k, v in overrides.items() if k != "_class_name"}
    try:
        validate_scheduler(name, keys)
        build_sampler(cfg.scheduler, steps, keys, name=name)
    except ValueError as e:
        raise RequestError(f"scheduler: {e}") from None
    return overrides


def check_tiling(tiling: dict, cfg: Configs) -> dict:
    """Complete the tiling keys for SD's AutoencoderKL, whose tiles are square: one size (default the VAE's
    sample_size) and one overlap factor (default 0.25); check that the tiles cover the output exactly."""
    from toolkit.models.sd.vae import kl_tile_geometry

    if not tiling.get("enabled"):
        return {"enabled": False}
    sizes = {tiling.get("tile_sample_min_height"), tiling.get("tile_sample_min_width")} - {None}
    overlaps = {tiling.get("tile_overlap_factor_height"), tiling.get("tile_overlap_factor_width")} - {None}
    for what, values in (("tile_sample_min_height/width", sizes), ("tile_overlap_factor_height/width", overlaps)):
        if len(values) > 1:
            fail(f"vae.{what}", tuple(sorted(values)), "Stable Diffusion's VAE tiles are square: give one value "
                 "(or the same value for both)")
    sample_size = cfg.vae.get("sample_size", 512)
    size = sizes.pop() if sizes else (sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size)
    overlap = overlaps.pop() if overlaps else 0.25
    check_multiple("vae.tile_sample_min_height", size, cfg.spatial, "VAE compression")
    try:
        kl_tile_geometry(size, cfg.spatial, overlap).check()
    except ValueError as e:
        fail("vae.tile_sample_min_height/width", size, str(e))
    return {"enabled": True, "tile_sample_min_size": int(size), "tile_overlap_factor": float(overlap)}


@dataclass
class AnimateDiff:
    """A loaded AnimateDiff: the configs and the networks (MindSpore Cells)."""
    configs: Configs
    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    dtype: Any = ms.float32
    forward: Callable = None  # the (possibly jit-compiled) motion UNet call
    decode_compiled: Callable | None = None  # compile_network(vae) with runtime.jit=true, run one frame at a time
    embed_cache: dict = field(default_factory=dict)


def load(folder: Path, dtype=ms.float32, variant: str | None = None, jit: bool = True,
         motion_adapter: Path | None = None) -> AnimateDiff:
    from toolkit.models.animatediff import load_motion_unet
    from toolkit.models.clip import CLIPTextModel
    from toolkit.models.sd.vae import AutoencoderKL
    from toolkit.text import load_tokenizer

    if motion_adapter is None:
        raise loading.CheckpointError("AnimateDiff needs model.motion_adapter (a MotionAdapter folder or hub id)")
    cfg = read_configs(folder, motion_adapter)
    tokenizer = load_tokenizer(Path(folder) / "tokenizer")
    text_encoder, _ = loading.build_and_load(CLIPTextModel, folder, "text_encoder", variant, dtype)
    unet, _ = load_motion_unet(Path(folder) / "unet", motion_adapter, variant, dtype)
    vae, _ = loading.build_and_load(AutoencoderKL, folder, "vae", variant, dtype)
    forward = compile_network(unet) if jit else unet
    # compiled, SD's VAE decodes 1.5-1.8x faster than eagerly (one compile per frame or tile size: seconds)
    decode_compiled = compile_network(vae) if jit else None
    return AnimateDiff(cfg, tokenizer, text_encoder, unet, vae, dtype, forward, decode_compiled)


def encode(model: AnimateDiff, r: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(prompt_embeds, negative_prompt_embeds or None) as diffusers' AnimateDiffPipeline.encode_prompt, cached per
    distinct text request."""
    from toolkit.text import encode_prompt_clip

    do_cfg = r["guidance_scale"] > 1.0
    if r.get("prompt_embeds") is not None:
        embeds = load_array("prompt_embeds", r["prompt_embeds"])
        neg = load_array("negative_prompt_embeds", r["negative_prompt_embeds"], embeds.shape) \
            if r.get("negative_prompt_embeds") is not None else None
        return encode_prompt_clip(model.tokenizer, model.text_encoder, None, r.get("negative_prompt") if neg is None
                                  else None, do_cfg=do_cfg, num_videos_per_prompt=r["num_videos_per_prompt"],
                                  prompt_embeds=embeds, negative_prompt_embeds=neg)
    prompt, negative = r["prompt"], r.get("negative_prompt")
    if isinstance(prompt, list) and isinstance(negative, str):  # one negative prompt for every prompt
        negative = [negative] * len(prompt)
    key = (repr(prompt), repr(negative), do_cfg, r["num_videos_per_prompt"], r.get("clip_skip"))
    if key not in model.embed_cache:
        model.embed_cache[key] = encode_prompt_clip(
            model.tokenizer, model.text_encoder, prompt, negative, do_cfg=do_cfg,
            num_videos_per_prompt=r["num_videos_per_prompt"], clip_skip=r.get("clip_skip"))
    return model.embed_cache[key]


def generate(model: AnimateDiff, r: dict, rng: np.random.Generator, timer: Timer | None = None,
             callback=None, progress: bool = True) -> np.ndarray:
    """Frames (B, F, H, W, 3) float32 in [0, 1] for a request already completed by ``check_request``."""
    timer = timer or Timer()
    cfg = model.configs
    with timer("encode_prompt"):
        cond, uncond = encode(model, r)
    overrides = dict(r.get("scheduler") or {})
    sampler = build_sampler(cfg.scheduler, r["num_inference_steps"], overrides,
                            name=overrides.pop("_class_name", None) or cfg.scheduler.get("_class_name"))
    shape = latent_shape(cfg, r["batch_size"], r["num_frames"], r["height"], r["width"])
    x = initial_latents(shape, r.get("latents"), rng, sampler.init_noise_sigma)

    def net(x, t, text):
        ts = ms.Tensor(np.full((x.shape[0],), t, np.float32))
        out = model.forward(ms.Tensor(x).astype(model.dtype), ts, ms.Tensor(text).astype(model.dtype))
        return out.asnumpy().astype(np.float32)

    scale = r["guidance_scale"]
    model_fn = classifier_free_guidance(net, cond, uncond if scale > 1.0 else None, lambda i, t: scale,
                                        batched=r.get("batch_guidance", True))
    with timer("denoise"):
        x = sample(model_fn, x, sampler, rng=rng, callback=callback, progress=progress)
    with timer("decode"):
        video = decode(model, x, r["decode_chunk_size"], r.get("vae_tiling") or {})
    return video_to_frames(video)


def decode(model: AnimateDiff, latents: np.ndarray, decode_chunk_size: int, tiling: dict) -> np.ndarray:
    """Latents (B, C, F, h, w) -> video (B, 3, F, H, W) in [-1, 1]: the frames are decoded independently,
    ``decode_chunk_size`` at a time (diffusers' AnimateDiff ``decode_latents``), each chunk whole or in tiles."""
    b, c, f, h, w = latents.shape
    inv_scale = np.float32(1.0 / float(model.configs.vae.get("scaling_factor", 0.18215)))
    z = (inv_scale * latents).transpose(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    forward = frame_decoder(model, h, w)
    chunks = []
    for start in range(0, b * f, decode_chunk_size):
        zc = ms.Tensor(np.ascontiguousarray(z[start:start + decode_chunk_size])).astype(model.dtype)
        if tiling.get("enabled"):
            out = model.vae.decode_tiled(zc, tiling["tile_sample_min_size"], tiling["tile_overlap_factor"],
                                         forward=forward)
        else:
            out = forward(zc)
        chunks.append(out.asnumpy().astype(np.float32))
    frames = np.concatenate(chunks)
    return frames.reshape((b, f) + frames.shape[1:]).transpose(0, 2, 1, 3, 4)


# a compiled chunk decode holds the whole chunk's activations (~2.5x diffusers' peak: 8 frames at 256x256 took
# 4.6 GB); chunks whose widest activation (the decoder's top level) stays under this size are one graph call
CHUNK_GRAPH_BYTES = 2 ** 26


def frame_decoder(model: AnimateDiff, h: int, w: int) -> Callable:
    """The VAE decode for latents of h x w: compiled when one frame of that size fits one graph
    (``base.decoder_fits_one_graph``: up to ~512x512 at SD's widths), else eager, whole chunks (also with
    runtime.jit=false). Compiled, a small chunk -- one that fits one graph with its widest activation under
    ``CHUNK_GRAPH_BYTES`` -- is one graph call (the per-call cost is paid once: 8 small frames 12 ms instead of
    42 ms; 4 frames at 128x128 and SD's widths 11% faster); a larger chunk one call per frame (SD's VAE decodes
    frames independently, and one frame's memory and convolution pieces stay few)."""
    if model.decode_compiled is None or not decoder_fits_one_graph(model.vae, 1, h, w):
        return model.vae.decode_latents
    one_frame = per_frame(model.decode_compiled)

    def decode(z):
        n, _, zh, zw = z.shape
        if 4 * math.prod(decoder_widest_activation(model.vae, n, zh, zw)) <= CHUNK_GRAPH_BYTES and \
                decoder_fits_one_graph(model.vae, n, zh, zw):
            return model.decode_compiled(z)
        return one_frame(z)
    return decode
