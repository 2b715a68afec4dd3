"""Stable Video Diffusion's autoencoder: AutoencoderKLTemporalDecoder in MindSpore.

Port of diffusers' ``models/autoencoders/autoencoder_kl_temporal_decoder.py`` (and ``MidBlockTemporalDecoder`` /
``UpBlockTemporalDecoder`` of ``unets/unet_3d_blocks.py``). The encoder is SD's image encoder (the shared
``Encoder`` of ``toolkit/models/unet_blocks.py``) followed by ``quant_conv``: images (N, 3, H, W) ->
``DiagonalGaussian`` over (N, latent_channels, H/8, W/8), per image. The decoder is temporal: every resnet is a
``SpatioTemporalResBlock`` (its temporal half blended in with ``1 - sigmoid(mix_factor)``), and a (3, 1, 1)
``time_conv_out`` mixes neighbouring frames of the output. There is no ``post_quant_conv``.

``decode(z (B*F, C, h, w), num_frames=F) -> (B*F, 3, H, W)``: the latents of B videos of F frames each, frames
folded into the batch axis. Latent scaling (``scaling_factor``) is the caller's business, as in diffusers.
"""
from __future__ import annotations

from mindspore import nn

from toolkit.models.base import ModelMixin
from toolkit.models.layers import DiagonalGaussian
from toolkit.models.layers import Conv2d, Conv3d, GroupNorm, silu
from toolkit.models.svd.blocks import SpatioTemporalResBlock, fold_frames, unfold_frames
from toolkit.models.unet_blocks import Encoder, GroupNormAttention, Upsample2D


def _decoder_resnet(in_channels: int, out_channels: int) -> SpatioTemporalResBlock:
    return SpatioTemporalResBlock(in_channels, out_channels, None, eps=1e-6, temporal_eps=1e-5, merge_factor=0.0,
                                  merge_strategy="learned", switch_spatial_to_temporal_mix=True)


class MidBlockTemporalDecoder(nn.Cell):
    """``num_layers`` decoder resnets with one single-head group-norm attention after the first. (With
    num_layers=1 diffusers still builds the attention and never calls it; it is built here too, so such
    checkpoints load.)"""

    def __init__(self, in_channels: int, out_channels: int, attention_head_dim: int = 512, num_layers: int = 1):
        super().__init__()
        self.resnets = nn.CellList([_decoder_resnet(in_channels if i == 0 else out_channels, out_channels)
                                    for i in range(num_layers)])
        self.attentions = nn.CellList([
            GroupNormAttention(in_channels, heads=in_channels // attention_head_dim, dim_head=attention_head_dim,
                               bias=True, norm_num_groups=32, eps=1e-6, residual_connection=True)])

    def construct(self, hidden_states, num_frames: int):
        hidden_states = self.resnets[0](hidden_states, None, num_frames)
        for resnet, attn in zip(self.resnets[1:], self.attentions):
            hidden_states = resnet(attn(hidden_states), None, num_frames)
        return hidden_states


class UpBlockTemporalDecoder(nn.Cell):
    """``num_layers`` decoder resnets, then an optional nearest-2x + conv ``upsamplers.0``."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int = 1, add_upsample: bool = True):
        super().__init__()
        self.resnets = nn.CellList([_decoder_resnet(in_channels if i == 0 else out_channels, out_channels)
                                    for i in range(num_layers)])
        self.upsamplers = (nn.CellList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
                           if add_upsample else None)

    def construct(self, hidden_states, num_frames: int):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, None, num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states)
        return hidden_states


class TemporalDecoder(nn.Cell):
    """conv_in -> MidBlockTemporalDecoder -> UpBlockTemporalDecoder x len(block_out_channels) (layers_per_block + 1
    resnets each; all but the last double the size) -> conv_norm_out -> SiLU -> conv_out -> time_conv_out over
    each video's frames."""

    def __init__(self, in_channels: int = 4, out_channels: int = 3, block_out_channels: tuple = (128, 256, 512, 512),
                 layers_per_block: int = 2):
        super().__init__()
        self.conv_in = Conv2d(in_channels, block_out_channels[-1], 3, padding=1)
        self.mid_block = MidBlockTemporalDecoder(block_out_channels[-1], block_out_channels[-1],
                                                 attention_head_dim=block_out_channels[-1], num_layers=layers_per_block)
        reversed_channels = list(reversed(block_out_channels))
        blocks, out_ch = [], reversed_channels[0]
        for i, ch in enumerate(reversed_channels):
            prev, out_ch = out_ch, ch
            blocks.append(UpBlockTemporalDecoder(prev, out_ch, num_layers=layers_per_block + 1,
                                                 add_upsample=i < len(block_out_channels) - 1))
        self.up_blocks = nn.CellList(blocks)
        self.conv_norm_out = GroupNorm(32, block_out_channels[0], eps=1e-6)
        self.conv_out = Conv2d(block_out_channels[0], out_channels, 3, padding=1)
        self.time_conv_out = Conv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0))

    def compiled_parts(self) -> list:
        """(owner, attribute, listed, per_frame) of the parts to compile separately (for ``base.CompiledParts``)
        when the whole decoder does not fit one graph: per frame, the parts that see one frame at a time (conv_in,
        the spatial half of every resnet, the mid-block attention, the up-samplers, conv_norm_out, conv_out); over
        the whole clip, the temporal half of every resnet (its (3, 1, 1) convolutions run in one piece)."""
        parts = [(self, "conv_in", False, True), (self.mid_block, "attentions", True, True),
                 (self, "conv_norm_out", False, True), (self, "conv_out", False, True)]
        for block in [self.mid_block, *self.up_blocks]:
            parts += [(resnet, "spatial_res_block", False, True) for resnet in block.resnets]
            parts += [(resnet, "temporal_res_block", False, False) for resnet in block.resnets]
        return parts + [(block, "upsamplers", True, True) for block in self.up_blocks if block.upsamplers is not None]

    def construct(self, sample, num_frames: int):
        sample = self.mid_block(self.conv_in(sample), num_frames)
        for block in self.up_blocks:
            sample = block(sample, num_frames)
        sample = self.conv_out(silu(self.conv_norm_out(sample)))
        return unfold_frames(self.time_conv_out(fold_frames(sample, num_frames)))


class AutoencoderKLTemporalDecoder(ModelMixin):
    """``encode(x) -> DiagonalGaussian`` (``mode()`` is what Stable Video Diffusion conditions on),
    ``decode(z, num_frames) -> frames``; see the module docstring for layouts."""

    ignored_config_keys = ("force_upcast", "sample_size")

    def __init__(self, in_channels: int = 3, out_channels: int = 3, down_block_types: tuple = ("DownEncoderBlock2D",),
                 block_out_channels: tuple = (64,), layers_per_block: int = 1, latent_channels: int = 4,
                 sample_size: int = 32, scaling_factor: float = 0.18215, force_upcast: bool = True):
        super().__init__()
        self.encoder = Encoder(in_channels, latent_channels, tuple(down_block_types), tuple(block_out_channels),
                               layers_per_block, double_z=True)
        self.decoder = TemporalDecoder(latent_channels, out_channels, tuple(block_out_channels), layers_per_block)
        self.quant_conv = Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.scaling_factor = scaling_factor
        self.spatial_ratio = 2 ** (len(block_out_channels) - 1)

    def encode(self, x) -> DiagonalGaussian:
        """Posterior of images ``x`` (N, C, H, W), one per image."""
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z, num_frames: int):
        """Frames (B*F, 3, H, W) of latents ``z`` (B*F, C, h, w) (unscaled: divide by scaling_factor first)."""
        if z.shape[0] % num_frames:
            raise ValueError(f"decode: {z.shape[0]} latents are not a whole number of videos of {num_frames} frames")
        return self.decoder(z, num_frames)

    def construct(self, z, num_frames: int):
        return self.decode(z, num_frames)
