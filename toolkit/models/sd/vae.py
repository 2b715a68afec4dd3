"""Stable Diffusion's KL autoencoder (AutoencoderKL) in MindSpore.

Port of diffusers' ``models/autoencoders/autoencoder_kl.py``; the encoder and decoder are
``Encoder`` / ``Decoder`` from ``toolkit/models/unet_blocks.py``. Parameter names and config keys
are diffusers'. Images (B, 3, H, W) <-> latents (B, latent_channels, H/f, W/f), f = 2**(levels-1)
(8 for SD). Latent scaling (``scaling_factor``, ``shift_factor``) is the caller's business, as in
diffusers; the values are kept on the instance.

Extras, all matching diffusers:
* ``decode(z, sliced=True)`` / ``encode(x, sliced=True)``: one batch element at a time (``enable_slicing``);
* ``decode_tiled`` / ``encode_tiled``: overlapping square tiles of ``tile_sample_min_size``
  (default: the config's sample_size) pixels, overlap factor 0.25, blended with
  ``toolkit.vae_tiling`` (``enable_tiling``), applied only when the input exceeds one tile;
* checkpoints with the pre-0.14 attention names (``query``/``key``/``value``/``proj_attn``) load too.
"""
from __future__ import annotations

import re

from mindspore import Tensor, ops

from toolkit.models.base import ModelMixin
from toolkit.models.layers import DiagonalGaussian
from toolkit.models.layers import Conv2d
from toolkit.models.unet_blocks import Decoder, Encoder
from toolkit.vae_tiling import TileGeometry, tiled_apply

# diffusers' _convert_deprecated_attention_blocks: new name -> old name (VAE mid-block attention)
_DEPRECATED_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
_ATTN_PARAM = re.compile(r"(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)")


def kl_tile_geometry(tile_sample_min_size: int, spatial_ratio: int, tile_overlap_factor: float = 0.25,
                     *, encode: bool = False) -> TileGeometry:
    """diffusers' AutoencoderKL tiling arithmetic (square tiles, ``int()`` truncations included):
    decode tiles the latent with ``tile_latent_min_size = int(tile_sample_min_size / ratio)``, encode the image."""
    sample = tile_sample_min_size
    latent = int(tile_sample_min_size / spatial_ratio)
    src, dst = (sample, latent) if encode else (latent, sample)
    stride = int(src * (1 - tile_overlap_factor))
    blend = int(dst * tile_overlap_factor)
    return TileGeometry(tile=(src, src), stride=(stride, stride), blend=(blend, blend),
                        keep=(dst - blend, dst - blend), ratio=(1 / spatial_ratio) if encode else spatial_ratio)


class AutoencoderKL(ModelMixin):
    """``encode(x) -> DiagonalGaussian`` (mean / logvar / mode() / sample(noise)), ``decode(z) -> image``."""

    ignored_config_keys = ("force_upcast",)

    def __init__(self, in_channels: int = 3, out_channels: int = 3, down_block_types: tuple = ("DownEncoderBlock2D",),
                 up_block_types: tuple = ("UpDecoderBlock2D",), block_out_channels: tuple = (64,),
                 layers_per_block: int = 1, act_fn: str = "silu", latent_channels: int = 4,
                 norm_num_groups: int = 32, sample_size: int | tuple = 32, scaling_factor: float = 0.18215,
                 shift_factor: float | None = None, latents_mean: tuple | None = None,
                 latents_std: tuple | None = None, use_quant_conv: bool = True, use_post_quant_conv: bool = True,
                 mid_block_add_attention: bool = True):
        super().__init__()
        self.encoder = Encoder(in_channels, latent_channels, tuple(down_block_types), tuple(block_out_channels),
                               layers_per_block, norm_num_groups, act_fn, double_z=True,
                               mid_block_add_attention=mid_block_add_attention)
        self.decoder = Decoder(latent_channels, out_channels, tuple(up_block_types), tuple(block_out_channels),
                               layers_per_block, norm_num_groups, act_fn,
                               mid_block_add_attention=mid_block_add_attention)
        self.quant_conv = Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None
        self.scaling_factor, self.shift_factor = scaling_factor, shift_factor
        self.latents_mean, self.latents_std = latents_mean, latents_std
        self.spatial_ratio = 2 ** (len(block_out_channels) - 1)
        self.tile_sample_min_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        self.tile_overlap_factor = 0.25

    def checkpoint_key(self, name: str, keys) -> str:
        """Parameter name -> checkpoint key; old VAE checkpoints name the attention query/key/value/proj_attn."""
        if name in keys:
            return name
        m = _ATTN_PARAM.fullmatch(name)
        if m:
            old = f"{m.group(1)}.{_DEPRECATED_ATTENTION_NAMES[m.group(2)]}.{m.group(3)}"
            if old in keys:
                return old
        return name

    # ---- whole batch ---------------------------------------------------------------------------
    def encode_moments(self, x: Tensor) -> Tensor:
        """(B, 2*latent_channels, h, w): mean and (unclamped) logvar stacked on channels."""
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h

    def decode_latents(self, z: Tensor) -> Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encode(self, x: Tensor, sliced: bool = False) -> DiagonalGaussian:
        """Posterior of images ``x`` (B, C, H, W); ``sliced``: one batch element at a time."""
        if sliced and x.shape[0] > 1:
            return DiagonalGaussian(ops.cat([self.encode_moments(x[i:i + 1]) for i in range(x.shape[0])], 0))
        return DiagonalGaussian(self.encode_moments(x))

    def decode(self, z: Tensor, sliced: bool = False) -> Tensor:
        """Images of latents ``z`` (unscaled: divide by scaling_factor first); ``sliced``: one at a time."""
        if sliced and z.shape[0] > 1:
            return ops.cat([self.decode_latents(z[i:i + 1]) for i in range(z.shape[0])], 0)
        return self.decode_latents(z)

    def construct(self, z):
        return self.decode_latents(z)

    # ---- spatial tiling (diffusers enable_tiling: tiled_decode / _tiled_encode) ---------------
    def tile_geometry(self, tile_sample_min_size: int | None = None, tile_overlap_factor: float | None = None,
                      *, encode: bool = False) -> TileGeometry:
        """The tiles diffusers uses; checked so every output pixel is produced exactly once."""
        g = kl_tile_geometry(tile_sample_min_size or self.tile_sample_min_size, self.spatial_ratio,
                             self.tile_overlap_factor if tile_overlap_factor is None else tile_overlap_factor,
                             encode=encode)
        return g.check()

    def decode_tiled(self, z: Tensor, tile_sample_min_size: int | None = None,
                     tile_overlap_factor: float | None = None, forward=None) -> Tensor:
        """Decode overlapping latent tiles and blend them; a latent no larger than one tile is decoded whole.
        ``forward``: the latents -> images call made per tile (default ``decode_latents``; pipelines pass its
        compiled form, ``compile_network(vae)``)."""
        forward = forward or self.decode_latents
        g = self.tile_geometry(tile_sample_min_size, tile_overlap_factor)
        if z.shape[-2] <= g.tile[0] and z.shape[-1] <= g.tile[1]:
            return forward(z)
        return Tensor(tiled_apply(forward, z, g))

    def encode_tiled(self, x: Tensor, tile_sample_min_size: int | None = None,
                     tile_overlap_factor: float | None = None) -> DiagonalGaussian:
        """Encode overlapping image tiles and blend the moments; an image no larger than one tile is encoded whole."""
        g = self.tile_geometry(tile_sample_min_size, tile_overlap_factor, encode=True)
        if x.shape[-2] <= g.tile[0] and x.shape[-1] <= g.tile[1]:
            return DiagonalGaussian(self.encode_moments(x))
        return DiagonalGaussian(Tensor(tiled_apply(self.encode_moments, x, g)))
