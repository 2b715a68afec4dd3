"""Tiny CogVideoX image-to-video checkpoints written by diffusers, and reference runs of diffusers'
CogVideoXImageToVideoPipeline and CogVideoXVideoToVideoPipeline.

The checkpoints reuse the text-to-video pieces of ``tests.reference.cogvideox`` (tokenizer, T5, VAE, scheduler)
with an image-to-video transformer (``in_channels`` = 2 x the VAE's 4 latent channels). Two flavours mirror the
real checkpoints:
- "5b-i2v" (THUDM/CogVideoX-5b-I2V): rotary plus a learned positional embedding;
- "1.5-i2v" (THUDM/CogVideoX1.5-5B-I2V): rotary, temporal patching (patch_size_t=2), no patch bias, an ofs
  embedding, and a VAE with ``invert_scale_latents`` (the image latent is divided by the scaling factor).

Reference runs take the VAE posterior's mode (diffusers samples it with the torch generator, which the toolkit
cannot reproduce), and video-to-video takes the noise added to the encoded video as an argument (diffusers
refuses ``video`` and ``latents`` together, so the pipeline module's ``randn_tensor`` is replaced for the call).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel, CogVideoXVideoToVideoPipeline

from tests.reference import cogvideox as ref

I2V_FLAVOURS = {
    "5b-i2v": dict(use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True),
    "1.5-i2v": dict(use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False, ofs_embed_dim=2),
}


def build_i2v(folder: str | Path, flavour: str = "5b-i2v", scheduler: str = "CogVideoXDDIMScheduler",
              seed: int = 0) -> CogVideoXImageToVideoPipeline:
    """Build a tiny random-weight CogVideoX image-to-video pipeline and ``save_pretrained`` it into ``folder``."""
    base = ref.build(folder, "5b", scheduler, seed)  # writes the shared components; the I2V save replaces the rest
    torch.manual_seed(seed + 3)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=2, sample_width=ref.WIDTH // 8, sample_height=ref.HEIGHT // 8,
        sample_frames=ref.NUM_FRAMES, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=ref.MAX_SEQ,
        **I2V_FLAVOURS[flavour])
    if flavour == "1.5-i2v":
        base.vae.register_to_config(invert_scale_latents=True)
    pipe = CogVideoXImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                                         transformer=transformer, scheduler=base.scheduler)
    pipe.save_pretrained(str(folder))
    return pipe


def latent_shape(pipe, num_frames: int = ref.NUM_FRAMES, height: int = ref.HEIGHT, width: int = ref.WIDTH,
                 batch: int = 1) -> tuple:
    """The initial-noise shape of an image-to-video run: (B, F_latent padded to patch_size_t, 4, h, w)."""
    f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    p_t = pipe.transformer.config.patch_size_t
    if p_t is not None and f % p_t:
        f += p_t - f % p_t
    return (batch, f, pipe.transformer.config.out_channels, height // 8, width // 8)


@contextlib.contextmanager
def posterior_mode():
    """Every CogVideoX pipeline takes the VAE posterior's mode instead of a sample (``sample_mode="argmax"``)."""
    import diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video as i2v
    import diffusers.pipelines.cogvideo.pipeline_cogvideox_video2video as v2v

    def mode(encoder_output, generator=None, sample_mode="sample"):
        return encoder_output.latent_dist.mode()

    with mock.patch.object(i2v, "retrieve_latents", mode), mock.patch.object(v2v, "retrieve_latents", mode):
        yield


@contextlib.contextmanager
def step_noise(seed: int):
    """The DPM scheduler's per-step noise from numpy PCG64(seed), in step order, as the toolkit draws it."""
    import diffusers.schedulers.scheduling_dpm_cogvideox as dpm

    rng = np.random.Generator(np.random.PCG64(seed))
    with mock.patch.object(dpm, "randn_tensor", lambda shape, **_: torch.from_numpy(
            rng.standard_normal(tuple(shape)).astype(np.float32))):
        yield


def _frames(out) -> np.ndarray:
    return np.asarray(out.frames[0], dtype=np.float32)


def run_i2v(pipe: CogVideoXImageToVideoPipeline, image, latents: np.ndarray, seed: int = 7,
            prompt="a cat walks on the grass", negative_prompt="", num_inference_steps=2, guidance_scale=6.0,
            use_dynamic_cfg=False, num_frames=ref.NUM_FRAMES, height=ref.HEIGHT, width=ref.WIDTH) -> np.ndarray:
    """Frames (F, H, W, 3) in [0, 1] from a PIL image and the initial noise, posterior mode."""
    with posterior_mode(), step_noise(seed):
        out = pipe(image=image, prompt=prompt, negative_prompt=negative_prompt,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   use_dynamic_cfg=use_dynamic_cfg, num_frames=num_frames, height=height, width=width,
                   latents=torch.from_numpy(latents), max_sequence_length=ref.MAX_SEQ, output_type="np",
                   generator=torch.Generator().manual_seed(0))
    return _frames(out)


def video_to_video(pipe) -> CogVideoXVideoToVideoPipeline:
    """The video-to-video pipeline on a text-to-video checkpoint's components."""
    return CogVideoXVideoToVideoPipeline(**pipe.components)


def run_v2v(pipe: CogVideoXVideoToVideoPipeline, video: list, noise: np.ndarray, strength: float, seed: int = 7,
            prompt="a cat walks on the grass", negative_prompt="", num_inference_steps=4, guidance_scale=6.0,
            use_dynamic_cfg=False, height=ref.HEIGHT, width=ref.WIDTH) -> np.ndarray:
    """Frames (F, H, W, 3) in [0, 1] from a list of PIL frames, with ``noise`` added to the encoded video."""
    import diffusers.pipelines.cogvideo.pipeline_cogvideox_video2video as v2v

    def given_noise(shape, **_):
        assert tuple(shape) == noise.shape, (tuple(shape), noise.shape)
        return torch.from_numpy(noise)

    with posterior_mode(), step_noise(seed), mock.patch.object(v2v, "randn_tensor", given_noise):
        out = pipe(video=video, prompt=prompt, negative_prompt=negative_prompt, strength=strength,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   use_dynamic_cfg=use_dynamic_cfg, height=height, width=width, max_sequence_length=ref.MAX_SEQ,
                   output_type="np", generator=torch.Generator().manual_seed(0))
    return _frames(out)


def reconstruction(vae, video: list, height=ref.HEIGHT, width=ref.WIDTH) -> np.ndarray:
    """diffusers' VAE decode of the posterior mode of a list of PIL frames: frames (F, H, W, 3) in [0, 1]."""
    from diffusers.video_processor import VideoProcessor

    processor = VideoProcessor(vae_scale_factor=8)
    x = processor.preprocess_video(video, height=height, width=width)
    with torch.no_grad():
        decoded = vae.decode(vae.encode(x).latent_dist.mode()).sample
    return np.asarray(processor.postprocess_video(decoded, output_type="np")[0], dtype=np.float32)
