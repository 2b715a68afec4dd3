"""Tiny CogVideoX pipelines written by diffusers, and their outputs from fixed latents.

The component sizes follow diffusers' own tests (get_dummy_components), with two transformer layers
so that block-to-block wiring is exercised. Three transformer flavours mirror the real checkpoints:
"2b" (3-D sin-cos positional embedding), "5b" (3-D rotary embedding), "1.5" (rotary, temporal
patching patch_size_t=2, no patch bias).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXDPMScheduler,
                       CogVideoXPipeline, CogVideoXTransformer3DModel, DDIMScheduler)
from transformers import T5Config, T5EncoderModel

from toolkit.tiny_tokenizers import write_tiny_t5_tokenizer

HEIGHT, WIDTH = 32, 48  # latent 4x6: non-square, several tokens per frame
NUM_FRAMES = 9
MAX_SEQ = 16

# the real checkpoints' scheduler settings (CogVideoX-2b: DDIM-family, 5b: DPM-family)
SCHEDULER_KW = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                    num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                    set_alpha_to_one=True, snr_shift_scale=3.0, steps_offset=0, timestep_spacing="trailing")
SCHEDULERS = {
    "CogVideoXDDIMScheduler": lambda: CogVideoXDDIMScheduler(**SCHEDULER_KW),
    "CogVideoXDPMScheduler": lambda: CogVideoXDPMScheduler(**SCHEDULER_KW),
    "DDIMScheduler": lambda: DDIMScheduler(),
}
FLAVOURS = {
    "2b": dict(),
    "5b": dict(use_rotary_positional_embeddings=True),
    "1.5": dict(use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False),
}


def tiny_t5(vocab_size: int) -> T5EncoderModel:
    cfg = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                   layer_norm_epsilon=1e-6, tie_word_embeddings=False)
    return T5EncoderModel(cfg)


def build(folder: str | Path, flavour: str = "5b", scheduler: str = "CogVideoXDDIMScheduler",
          seed: int = 0, variant: str | None = None, max_shard_size: str | None = None) -> CogVideoXPipeline:
    """Build a tiny random-weight CogVideoX pipeline and ``save_pretrained`` it into ``folder``."""
    folder = Path(folder)
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=2, sample_width=WIDTH // 8, sample_height=HEIGHT // 8,
        sample_frames=NUM_FRAMES, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=MAX_SEQ,
        **FLAVOURS[flavour])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    torch.manual_seed(seed + 2)
    tok_dir = folder / "tokenizer"
    vocab = write_tiny_t5_tokenizer(tok_dir)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    text_encoder = tiny_t5(vocab)
    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=SCHEDULERS[scheduler]())
    kw = {}
    if variant:
        kw["variant"] = variant
    if max_shard_size:
        kw["max_shard_size"] = max_shard_size
    pipe.save_pretrained(str(folder), **kw)
    return pipe


def latent_shape(pipe: CogVideoXPipeline, num_frames: int = NUM_FRAMES, height: int = HEIGHT,
                 width: int = WIDTH, batch: int = 1) -> tuple:
    f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    p_t = pipe.transformer.config.patch_size_t
    if p_t is not None and f % p_t:
        f += p_t - f % p_t
    return (batch, f, pipe.transformer.config.in_channels, height // 8, width // 8)


def run(pipe: CogVideoXPipeline, latents: np.ndarray, prompt="a cat walks on the grass", negative_prompt="",
        num_inference_steps=2, guidance_scale=6.0, use_dynamic_cfg=False, num_frames=NUM_FRAMES,
        height=HEIGHT, width=WIDTH) -> np.ndarray:
    """Frames (F, H, W, 3) in [0, 1], float32, from the given initial latents."""
    out = pipe(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
               guidance_scale=guidance_scale, use_dynamic_cfg=use_dynamic_cfg, num_frames=num_frames,
               height=height, width=width, latents=torch.from_numpy(latents),
               max_sequence_length=MAX_SEQ, output_type="np", generator=torch.Generator().manual_seed(0))
    return np.asarray(out.frames[0], dtype=np.float32)


def feed_numpy_noise(monkeypatch, seed: int) -> None:
    """Make the DPM scheduler's per-step noise come from numpy PCG64(seed), in the order the toolkit
    draws it (float64 draws cast to float32), so a stochastic sampler can be compared."""
    import diffusers.schedulers.scheduling_dpm_cogvideox as dpm

    rng = np.random.Generator(np.random.PCG64(seed))
    monkeypatch.setattr(dpm, "randn_tensor", lambda shape, **_: torch.from_numpy(
        rng.standard_normal(tuple(shape)).astype(np.float32)))
