"""Tiny diffusers UNet / KL-VAE references for the UNet families, and a helper that loads a torch
module's weights into one of our Cells through the toolkit's exact-key loader.

Sizes follow diffusers' own tests (tests/models/unets/test_models_unet_2d_condition.py:
block_out_channels (4, 8), layers_per_block 1, cross_attention_dim 32, norm_num_groups 2;
tests/pipelines/animatediff: AutoencoderKL block_out_channels [32, 64] -> here [8, 16] with 4 groups).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

from toolkit.loading import load_weights

# diffusers' test UNet; attention_head_dim is the per-block head count (diffusers' naming quirk)
TINY_UNET = dict(block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, norm_num_groups=2,
                 attention_head_dim=(2, 4))
# three levels, cross-attention in the middle level too, 2 resnets per level, 2 transformer layers in
# the middle level, linear projections
TINY_UNET_3 = dict(block_out_channels=(4, 8, 8), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
                   down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                   cross_attention_dim=32, norm_num_groups=2, attention_head_dim=(1, 2, 4),
                   transformer_layers_per_block=(1, 2, 1), use_linear_projection=True)
TINY_VAE = dict(block_out_channels=[8, 16], in_channels=3, out_channels=3,
                down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                latent_channels=4, norm_num_groups=4, sample_size=32)


def build_unet(folder: str | Path, seed: int = 0, **config) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    model = UNet2DConditionModel(**config).eval()
    _randomize_norms(model)
    model.save_pretrained(str(folder))
    return model


def build_vae(folder: str | Path, seed: int = 0, **config) -> AutoencoderKL:
    torch.manual_seed(seed)
    model = AutoencoderKL(**config).eval()
    _randomize_norms(model)
    model.save_pretrained(str(folder))
    return model


def _randomize_norms(module: torch.nn.Module, seed: int = 7):
    """Norm weights/biases start at 1/0; make them random so a swapped or skipped norm parameter shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))


def load_from_torch(net, module: torch.nn.Module, tmp_path: Path):
    """Copy ``module``'s state dict into ``net`` with the toolkit's loader (exact keys and shapes)."""
    _randomize_norms(module)
    path = Path(tmp_path) / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    load_weights(net, [path])
    net.set_train(False)
    return net


def run(module: torch.nn.Module, *args, **kwargs):
    """Call a torch module on numpy inputs (None passes through) and return numpy output(s)."""
    conv = lambda a: torch.from_numpy(a) if isinstance(a, np.ndarray) else a  # noqa: E731
    with torch.no_grad():
        out = module(*[conv(a) for a in args], **{k: conv(v) for k, v in kwargs.items()})
    if isinstance(out, tuple):
        return tuple(o.numpy() if isinstance(o, torch.Tensor) else tuple(t.numpy() for t in o) for o in out)
    return out.numpy()
