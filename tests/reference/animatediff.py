"""A tiny AnimateDiff written by diffusers, laid out like the hub: a Stable Diffusion 1.5-format folder
(model_index.json naming StableDiffusionPipeline; unet, vae, text_encoder, tokenizer, scheduler) and a separate
motion-adapter folder (MotionAdapter config.json + safetensors), and diffusers' AnimateDiffPipeline built from
both, as ``AnimateDiffPipeline.from_pretrained(base, motion_adapter=MotionAdapter.from_pretrained(adapter))``
would build it.

Sizes follow diffusers' tests/pipelines/animatediff get_dummy_components, smaller: UNet block_out_channels
(8, 16), two resnets per block, 2 norm groups, cross-attention width 32; MotionAdapter on the same blocks, two
motion modules per block, 2 temporal heads, one temporal transformer layer in the first block and two in the
second (so per-block settings are exercised); a four-level KL VAE (8x spatial compression, as SD's); a
5-layer CLIP text encoder with the tiny CLIP tokenizer; DDIM with SD's betas and clip_sample=False.
Norm weights are randomised so a swapped norm parameter shows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import (AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tests.reference.unet import _randomize_norms
from toolkit.tiny_tokenizers import write_tiny_clip_tokenizer

HEIGHT, WIDTH = 64, 48  # latents 8 x 6: non-square
NUM_FRAMES = 8
MAX_SEQ_LENGTH = 16     # the adapter's temporal positional table: at most 16 frames

UNET = dict(block_out_channels=(8, 16), layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, norm_num_groups=2, attention_head_dim=(2, 4))
ADAPTER = dict(block_out_channels=(8, 16), motion_layers_per_block=2, motion_norm_num_groups=2,
               motion_num_attention_heads=2, motion_transformer_layers_per_block=(1, 2),
               motion_max_seq_length=MAX_SEQ_LENGTH)
VAE = dict(block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3,
           down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
           latent_channels=4, norm_num_groups=4, sample_size=32)
TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4,
            max_position_embeddings=77, layer_norm_eps=1e-5)


def build_adapter(folder: str | Path, seed: int = 1, **overrides) -> MotionAdapter:
    torch.manual_seed(seed)
    adapter = MotionAdapter(**{**ADAPTER, **overrides}).eval()
    _randomize_norms(adapter, seed=seed + 10)
    adapter.save_pretrained(str(folder))
    return adapter


def build(base: str | Path, adapter_folder: str | Path, seed: int = 0) -> AnimateDiffPipeline:
    """Write the SD-format base folder and the adapter folder; return diffusers' AnimateDiffPipeline on them."""
    base = Path(base)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET).eval()
    _randomize_norms(unet, seed=seed + 7)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE).eval()
    _randomize_norms(vae, seed=seed + 8)
    vocab = write_tiny_clip_tokenizer(base / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id, **TEXT)).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(str(base))
    adapter = build_adapter(adapter_folder, seed + 3)
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                               motion_adapter=adapter, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latent_shape(pipe: AnimateDiffPipeline, num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH,
                 batch: int = 1) -> tuple:
    """diffusers' AnimateDiff latent layout (B, C, F, H/f, W/f)."""
    f = pipe.vae_scale_factor
    return (batch, pipe.unet.config.in_channels, num_frames, height // f, width // f)


def run(pipe: AnimateDiffPipeline, latents: np.ndarray, prompt="a cat walks on the grass", negative_prompt="",
        num_inference_steps=2, guidance_scale=7.5, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH,
        clip_skip=None, decode_chunk_size=16) -> np.ndarray:
    """Frames (F, H, W, 3) float32 in [0, 1] from the given initial latents.

    transformers 5's CLIPTextModel lost ``text_model``, which diffusers' clip_skip path calls: it is given back
    for the call."""
    from unittest import mock

    with mock.patch.object(CLIPTextModel, "text_model", property(lambda self: self), create=True), torch.no_grad():
        out = pipe(prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, height=height, width=width,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   latents=torch.from_numpy(latents), output_type="np", clip_skip=clip_skip,
                   decode_chunk_size=decode_chunk_size, generator=torch.Generator().manual_seed(0))
    return np.asarray(out.frames[0], dtype=np.float32)
