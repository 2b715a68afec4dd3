"""A tiny Stable Video Diffusion checkpoint written by diffusers, and reference runs of diffusers'
StableVideoDiffusionPipeline.

Component sizes are those of diffusers' own test (tests/pipelines/stable_video_diffusion,
``get_dummy_components``): a two-level UNetSpatioTemporalConditionModel (32, 64 channels, 8 heads), an
AutoencoderKLTemporalDecoder (32, 64 channels), the SVD EulerDiscreteScheduler configuration (scaled_linear betas,
Karras sigmas 0.002..700, v-prediction, continuous timesteps, "leading" spacing, steps_offset 1), and a 5-layer
CLIPVisionModelWithProjection with a CLIPImageProcessor as ``feature_extractor``. Two departures, both so that
the pipeline can take a real image file as the toolkit does: the image encoder takes 224 px images (32 px
patches, 49 tokens; diffusers' test feeds a tensor, which skips the 224 px resize) and uses ``gelu`` like the real
OpenCLIP ViT-H encoder. Norm weights and the blend factors (``mix_factor``) are randomised, so a swapped norm or
a blend taken the wrong way round shows.

Reference runs draw the pipeline's two random tensors (augmentation noise, then the initial latents when none
are given) from numpy PCG64(seed), in the order the toolkit draws them.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

UNET = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=8, out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
            num_attention_heads=8, projection_class_embeddings_input_dim=96, addition_time_embed_dim=32,
            num_frames=6)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
                 num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
                 steps_offset=1, timestep_spacing="leading", timestep_type="continuous", trained_betas=None,
                 use_karras_sigmas=True)
VAE = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3,
           down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"], latent_channels=4)
IMAGE_ENCODER = dict(hidden_size=32, projection_dim=32, num_hidden_layers=5, num_attention_heads=4, image_size=224,
                     intermediate_size=37, patch_size=32, hidden_act="gelu")
NUM_FRAMES, HEIGHT, WIDTH = 6, 32, 48


def randomize(module: torch.nn.Module, seed: int = 7) -> torch.nn.Module:
    """Norm weights/biases away from 1/0 and every ``mix_factor`` away from its initial 0.5 / 0.0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        for name, p in module.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(torch.randn(p.shape, generator=g))
    return module.eval()


def build_unet(seed: int = 0, **overrides) -> UNetSpatioTemporalConditionModel:
    torch.manual_seed(seed)
    return randomize(UNetSpatioTemporalConditionModel(**dict(UNET, **overrides)), seed + 7)


def build_vae(seed: int = 0, **overrides) -> AutoencoderKLTemporalDecoder:
    torch.manual_seed(seed)
    return randomize(AutoencoderKLTemporalDecoder(**dict(VAE, **overrides)), seed + 8)


def build_image_encoder(seed: int = 0) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    return randomize(CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER)), seed + 9)


def build(folder: str | Path, seed: int = 0, variant: str | None = None) -> StableVideoDiffusionPipeline:
    """Build the tiny pipeline and ``save_pretrained`` it into ``folder``. ``variant="fp16"`` writes float16
    weights into ``*.fp16.safetensors`` files, as the hub's SVD checkpoints ship them; the returned pipeline then
    holds those float16-rounded weights in float32 (what a float32 computation of that checkpoint sees)."""
    pipe = StableVideoDiffusionPipeline(
        vae=build_vae(seed), image_encoder=build_image_encoder(seed), unet=build_unet(seed),
        scheduler=EulerDiscreteScheduler(**SCHEDULER),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224))
    if variant == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(str(folder), variant=variant)
    pipe.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def latent_shape(pipe, num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH,
                 batch: int = 1) -> tuple:
    f = pipe.vae_scale_factor  # 2 for the tiny two-level VAE (8 for the real one)
    return (batch, num_frames, pipe.unet.config.in_channels // 2, height // f, width // f)


@contextlib.contextmanager
def numpy_noise(seed: int):
    """The pipeline's ``randn_tensor`` draws from numpy PCG64(seed), in call order (augmentation noise first)."""
    import diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion as svd

    rng = np.random.Generator(np.random.PCG64(seed))
    with mock.patch.object(svd, "randn_tensor", lambda shape, **_: torch.from_numpy(
            rng.standard_normal(tuple(shape)).astype(np.float32))):
        yield


def run(pipe: StableVideoDiffusionPipeline, image, latents: np.ndarray | None = None, seed: int = 7,
        num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH, num_inference_steps: int = 2,
        **kw) -> np.ndarray:
    """Frames (F, H, W, 3) in [0, 1] from a PIL image; ``kw``: fps, motion_bucket_id, noise_aug_strength,
    min/max_guidance_scale, decode_chunk_size, num_videos_per_prompt (then all videos are returned)."""
    with numpy_noise(seed), torch.no_grad():
        out = pipe(image=image, height=height, width=width, num_frames=num_frames,
                   num_inference_steps=num_inference_steps,
                   latents=None if latents is None else torch.from_numpy(latents), output_type="np",
                   generator=torch.Generator().manual_seed(0), **kw)
    frames = np.asarray(out.frames, dtype=np.float32)
    return frames if kw.get("num_videos_per_prompt", 1) > 1 else frames[0]
