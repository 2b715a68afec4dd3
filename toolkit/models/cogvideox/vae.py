"""CogVideoX's causal 3-D VAE (AutoencoderKLCogVideoX) in MindSpore.

Ported from diffusers/models/autoencoders/autoencoder_kl_cogvideox.py (plus CogVideoXDownsample3D
from downsampling.py and CogVideoXUpsample3D from upsampling.py). Parameter names and config keys
are diffusers'. Layout (B, C, F, H, W), float32.

Video is processed a few frames at a time (2 latent frames per decode chunk, 8 sample frames per
encode chunk, the remainder going to the first chunk); the causal convolutions' temporal padding
for the next chunk is a nested dict of tensors, returned by ``decode_frames`` / ``encode_frames``
and passed back in. No state lives in the modules.
"""
from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn, ops

from toolkit.models.base import ModelMixin
from toolkit.models.causal_conv import CausalConv3d, SafeConv3d, frame_chunks, run_in_chunks
from toolkit.models.layers import Conv2d, DiagonalGaussian, GroupNorm, resize_nearest, silu
from toolkit.vae_tiling import vae_decode_tiled, vae_encode_tiled


def _activation(name: str):
    if name not in ("silu", "swish"):
        raise ValueError(f"CogVideoX VAE act_fn={name!r}: only 'silu'/'swish' are supported")
    return silu


def fit_latent(zq, size: tuple):
    """The latent ``zq`` resized (nearest) to ``size`` = (frames, height, width) as SpatialNorm3D
    conditions on it: with an odd number (> 1) of frames the first frame is resized on its own.
    Already that size: returned as is (the decoder fits it once per block, not once per norm)."""
    nf, h, w = size
    if tuple(zq.shape[-3:]) == (nf, h, w):
        return zq
    if nf > 1 and nf % 2 == 1:
        return ops.cat([resize_nearest(zq[:, :, :1], (1, h, w)), resize_nearest(zq[:, :, 1:], (nf - 1, h, w))], 2)
    return resize_nearest(zq, (nf, h, w))


class SpatialNorm3D(nn.Cell):
    """GroupNorm(f) * conv_y(zq) + conv_b(zq), zq resized (nearest) to f; the first frame separately
    when f has an odd number (> 1) of frames (https://huggingface.co/papers/2209.09002)."""

    def __init__(self, f_channels: int, zq_channels: int, groups: int = 32):
        super().__init__()
        self.norm_layer = GroupNorm(groups, f_channels, eps=1e-6)
        self.conv_y = CausalConv3d(zq_channels, f_channels, 1)
        self.conv_b = CausalConv3d(zq_channels, f_channels, 1)

    def construct(self, f, zq, cache=None):
        cache = cache or {}
        zq = fit_latent(zq, f.shape[-3:])
        new = {}
        y, new["conv_y"] = self.conv_y(zq, cache.get("conv_y"))
        b, new["conv_b"] = self.conv_b(zq, cache.get("conv_b"))
        return self.norm_layer(f) * y + b, new


class ResnetBlock3D(nn.Cell):
    """norm1 -> act -> conv1 -> norm2 -> act -> conv2, plus the (projected) input. Norms are GroupNorm,
    or SpatialNorm3D conditioned on the latent ``zq`` when ``spatial_norm_dim`` is set (decoder).
    No time embedding (CogVideoX's VAE uses temb_channels=0); dropout is inference-inactive."""

    def __init__(self, in_channels: int, out_channels: int | None = None, groups: int = 32, eps: float = 1e-6,
                 act_fn: str = "silu", conv_shortcut: bool = False, spatial_norm_dim: int | None = None,
                 time_pad: str = "first"):
        super().__init__()
        out_channels = out_channels or in_channels
        self.act = _activation(act_fn)
        self.spatial = spatial_norm_dim is not None
        if self.spatial:
            self.norm1 = SpatialNorm3D(in_channels, spatial_norm_dim, groups)
            self.norm2 = SpatialNorm3D(out_channels, spatial_norm_dim, groups)
        else:
            self.norm1 = GroupNorm(groups, in_channels, eps=eps)
            self.norm2 = GroupNorm(groups, out_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, time_pad=time_pad)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, time_pad=time_pad)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = "causal" if conv_shortcut else "1x1"
            self.conv_shortcut = (CausalConv3d(in_channels, out_channels, 3, time_pad=time_pad) if conv_shortcut
                                  else SafeConv3d(in_channels, out_channels, 1))

    def _norm(self, norm, x, zq, cache, new, key):
        if self.spatial:
            x, new[key] = norm(x, zq, cache.get(key))
            return x
        return norm(x)

    def construct(self, x, zq=None, cache=None):
        cache = cache or {}
        new = {}
        h = self.act(self._norm(self.norm1, x, zq, cache, new, "norm1"))
        h, new["conv1"] = self.conv1(h, cache.get("conv1"))
        h = self.act(self._norm(self.norm2, h, zq, cache, new, "norm2"))
        h, new["conv2"] = self.conv2(h, cache.get("conv2"))
        if self.shortcut == "causal":
            x, new["conv_shortcut"] = self.conv_shortcut(x, cache.get("conv_shortcut"))
        elif self.shortcut == "1x1":
            x = self.conv_shortcut(x)
        return h + x, new


class Downsample3D(nn.Cell):
    """Optional 2x temporal average pooling (the first frame kept alone when the count is odd), then a
    per-frame 3x3 stride-2 conv after zero-padding one row/column at the bottom/right."""

    def __init__(self, in_channels: int, out_channels: int, compress_time: bool = False):
        super().__init__()
        self.compress_time = compress_time
        self.conv = Conv2d(in_channels, out_channels, 3, stride=2, padding=(0, 1, 0, 1))  # (top, bottom, left, right)

    def construct(self, x):
        if self.compress_time:
            nf = x.shape[2]
            if nf % 2 == 1:
                rest = x[:, :, 1:]
                if nf > 1:
                    rest = (rest[:, :, 0::2] + rest[:, :, 1::2]) / 2
                    x = ops.cat([x[:, :, :1], rest], 2)
            else:
                x = (x[:, :, 0::2] + x[:, :, 1::2]) / 2
        return self.conv.per_frame(x)


class Upsample3D(nn.Cell):
    """Nearest 2x upsampling of H, W (and of time when ``compress_time``: an odd count > 1 keeps the
    first frame single, F -> 2F - 1; an even count doubles; one frame stays one), then a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, compress_time: bool = False):
        super().__init__()
        self.compress_time = compress_time
        self.conv = Conv2d(in_channels, out_channels, 3, stride=1, padding=1)

    def construct(self, x):
        nf, h, w = x.shape[-3:]
        if self.compress_time and nf > 1 and nf % 2 == 1:
            x = ops.cat([resize_nearest(x[:, :, :1], (1, 2 * h, 2 * w)),
                         resize_nearest(x[:, :, 1:], (2 * (nf - 1), 2 * h, 2 * w))], 2)
        elif self.compress_time and nf > 1:
            x = resize_nearest(x, (2 * nf, 2 * h, 2 * w))
        else:
            x = resize_nearest(x, (nf, 2 * h, 2 * w))
        return self.conv.per_frame(x)


class _Block(nn.Cell):
    """Down / mid / up block: resnets, then an optional resampler (``downsamplers.0`` / ``upsamplers.0``)."""

    def __init__(self, resnets: list, downsample=None, upsample=None):
        super().__init__()
        self.resnets = nn.CellList(resnets)
        self.has_down, self.has_up = downsample is not None, upsample is not None
        if self.has_down:
            self.downsamplers = nn.CellList([downsample])
        if self.has_up:
            self.upsamplers = nn.CellList([upsample])

    def construct(self, x, zq=None, cache=None):
        cache = cache or {}
        new = {}
        if zq is not None:  # every resnet of a block works at one size: fit the latent once
            zq = fit_latent(zq, x.shape[-3:])
        for i, resnet in enumerate(self.resnets):
            x, new[f"resnet_{i}"] = resnet(x, zq, cache.get(f"resnet_{i}"))
        if self.has_down:
            x = self.downsamplers[0](x)
        if self.has_up:
            x = self.upsamplers[0](x)
        return x, new


class Encoder3D(nn.Cell):
    def __init__(self, in_channels=3, out_channels=16, block_out_channels=(128, 256, 256, 512), layers_per_block=3,
                 act_fn="silu", norm_eps=1e-6, norm_num_groups=32, temporal_compression_ratio=4):
        super().__init__()
        levels = int(np.log2(temporal_compression_ratio))
        n = len(block_out_channels)
        self.conv_in = CausalConv3d(in_channels, block_out_channels[0], 3)
        blocks = []
        for i in range(n):
            c_in, c_out = block_out_channels[max(i - 1, 0)], block_out_channels[i]
            resnets = [ResnetBlock3D(c_in if k == 0 else c_out, c_out, norm_num_groups, norm_eps, act_fn)
                       for k in range(layers_per_block)]
            down = Downsample3D(c_out, c_out, compress_time=i < levels) if i < n - 1 else None
            blocks.append(_Block(resnets, downsample=down))
        self.down_blocks = nn.CellList(blocks)
        c = block_out_channels[-1]
        self.mid_block = _Block([ResnetBlock3D(c, c, norm_num_groups, norm_eps, act_fn) for _ in range(2)])
        self.norm_out = GroupNorm(norm_num_groups, c, eps=1e-6)
        self.conv_out = CausalConv3d(c, 2 * out_channels, 3)

    def construct(self, x, cache=None):
        cache = cache or {}
        new = {}
        h, new["conv_in"] = self.conv_in(x, cache.get("conv_in"))
        for i, block in enumerate(self.down_blocks):
            h, new[f"down_block_{i}"] = block(h, None, cache.get(f"down_block_{i}"))
        h, new["mid_block"] = self.mid_block(h, None, cache.get("mid_block"))
        h = silu(self.norm_out(h))
        h, new["conv_out"] = self.conv_out(h, cache.get("conv_out"))
        return h, new


class Decoder3D(nn.Cell):
    def __init__(self, in_channels=16, out_channels=3, block_out_channels=(128, 256, 256, 512), layers_per_block=3,
                 act_fn="silu", norm_eps=1e-6, norm_num_groups=32, temporal_compression_ratio=4):
        super().__init__()
        levels = int(np.log2(temporal_compression_ratio))
        chans = list(reversed(block_out_channels))
        n = len(chans)
        self.conv_in = CausalConv3d(in_channels, chans[0], 3)
        self.mid_block = _Block([ResnetBlock3D(chans[0], chans[0], norm_num_groups, norm_eps, act_fn,
                                               spatial_norm_dim=in_channels) for _ in range(2)])
        blocks = []
        for i in range(n):
            c_in, c_out = chans[max(i - 1, 0)], chans[i]
            resnets = [ResnetBlock3D(c_in if k == 0 else c_out, c_out, norm_num_groups, norm_eps, act_fn,
                                     spatial_norm_dim=in_channels) for k in range(layers_per_block + 1)]
            up = Upsample3D(c_out, c_out, compress_time=i < levels) if i < n - 1 else None
            blocks.append(_Block(resnets, upsample=up))
        self.up_blocks = nn.CellList(blocks)
        self.norm_out = SpatialNorm3D(chans[-1], in_channels, groups=norm_num_groups)
        self.conv_out = CausalConv3d(chans[-1], out_channels, 3)

    def construct(self, z, cache=None):
        cache = cache or {}
        new = {}
        h, new["conv_in"] = self.conv_in(z, cache.get("conv_in"))
        h, new["mid_block"] = self.mid_block(h, z, cache.get("mid_block"))
        for i, block in enumerate(self.up_blocks):
            h, new[f"up_block_{i}"] = block(h, z, cache.get(f"up_block_{i}"))
        h, new["norm_out"] = self.norm_out(h, z, cache.get("norm_out"))
        h, new["conv_out"] = self.conv_out(silu(h), cache.get("conv_out"))
        return h, new


class AutoencoderKLCogVideoX(ModelMixin):
    """CogVideoX VAE: ``encode(x) -> DiagonalGaussian``, ``decode(z) -> video``; (B, C, F, H, W).

    8 spatial / 4 temporal compression for the released checkpoints: 9 frames <-> 3 latent frames.
    Latent scaling (``scaling_factor``) is the caller's business, as in diffusers.
    """

    ignored_config_keys = ("force_upcast", "sample_size")
    num_latent_frames_batch_size = 2  # decode chunk; diffusers warns other values give poor results
    num_sample_frames_batch_size = 8  # encode chunk

    def __init__(self, in_channels: int = 3, out_channels: int = 3,
                 down_block_types: tuple = ("CogVideoXDownBlock3D",) * 4,
                 up_block_types: tuple = ("CogVideoXUpBlock3D",) * 4,
                 block_out_channels: tuple = (128, 256, 256, 512), latent_channels: int = 16,
                 layers_per_block: int = 3, act_fn: str = "silu", norm_eps: float = 1e-6, norm_num_groups: int = 32,
                 temporal_compression_ratio: float = 4, sample_height: int = 480, sample_width: int = 720,
                 scaling_factor: float = 1.15258426, shift_factor: float | None = None,
                 latents_mean: tuple | None = None, latents_std: tuple | None = None,
                 use_quant_conv: bool = False, use_post_quant_conv: bool = False,
                 invert_scale_latents: bool = False):
        super().__init__()
        for kind, types in (("CogVideoXDownBlock3D", down_block_types), ("CogVideoXUpBlock3D", up_block_types)):
            if any(t != kind for t in types) or len(types) != len(block_out_channels):
                raise ValueError(f"block types {list(types)}: expected {len(block_out_channels)} x {kind!r}")
        self.scaling_factor = scaling_factor
        self.shift_factor = shift_factor
        self.latents_mean, self.latents_std = latents_mean, latents_std
        self.invert_scale_latents = invert_scale_latents
        self.sample_height, self.sample_width = sample_height, sample_width
        self.spatial_ratio = 2 ** (len(block_out_channels) - 1)
        self.temporal_ratio = int(temporal_compression_ratio)
        common = dict(block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                      act_fn=act_fn, norm_eps=norm_eps, norm_num_groups=norm_num_groups,
                      temporal_compression_ratio=temporal_compression_ratio)
        self.encoder = Encoder3D(in_channels, latent_channels, **common)
        self.decoder = Decoder3D(latent_channels, out_channels, **common)
        # diffusers sizes these with out_channels (not latent_channels); kept for checkpoint compatibility
        self.quant_conv = SafeConv3d(2 * out_channels, 2 * out_channels, 1) if use_quant_conv else None
        self.post_quant_conv = SafeConv3d(out_channels, out_channels, 1) if use_post_quant_conv else None

    # ---- one temporal chunk, cache in and out ------------------------------------------------
    def encode_frames(self, x: Tensor, conv_cache: dict | None = None) -> tuple[Tensor, dict]:
        """Moments (mean and logvar on channels) of one chunk of sample frames, and the new conv cache."""
        h, conv_cache = self.encoder(x, conv_cache)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h, conv_cache

    def decode_frames(self, z: Tensor, conv_cache: dict | None = None) -> tuple[Tensor, dict]:
        """Video frames of one chunk of latent frames, and the new conv cache."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, conv_cache)

    # ---- whole videos --------------------------------------------------------------------------
    def encode_moments(self, x: Tensor, frame_batch_size: int | None = None) -> Tensor:
        """diffusers ``_encode`` without tiling: chunks of 8 frames (remainder first), cache threaded."""
        n = frame_batch_size or self.num_sample_frames_batch_size
        return run_in_chunks(self.encode_frames, x, frame_chunks(x.shape[2], n))[0]

    def encode(self, x: Tensor, frame_batch_size: int | None = None) -> DiagonalGaussian:
        return DiagonalGaussian(self.encode_moments(x, frame_batch_size))

    def decode(self, z: Tensor, frame_batch_size: int | None = None) -> Tensor:
        """diffusers ``_decode`` without tiling: chunks of 2 latent frames (remainder first), cache threaded."""
        n = frame_batch_size or self.num_latent_frames_batch_size
        return run_in_chunks(self.decode_frames, z, frame_chunks(z.shape[2], n))[0]

    def construct(self, z):
        return self.decode(z)

    # ---- spatial tiling (diffusers enable_tiling + tiled_decode / tiled_encode) --------------
    def _tiling(self, tile_sample_min_height, tile_sample_min_width, tile_overlap_factor_height,
                tile_overlap_factor_width) -> dict:
        return dict(tile_sample_min_height=tile_sample_min_height or self.sample_height // 2,
                    tile_sample_min_width=tile_sample_min_width or self.sample_width // 2,
                    spatial_ratio=self.spatial_ratio, tile_overlap_factor_height=tile_overlap_factor_height,
                    tile_overlap_factor_width=tile_overlap_factor_width)

    def decode_tiled(self, z: Tensor, *, tile_sample_min_height: int | None = None,
                     tile_sample_min_width: int | None = None, tile_overlap_factor_height: float = 1 / 6,
                     tile_overlap_factor_width: float = 1 / 5) -> Tensor:
        """Decode overlapping spatial tiles (each with its own temporal chunking) and blend them.
        Tile sizes default to half of the config's sample_height / sample_width, as in diffusers."""
        out = vae_decode_tiled(self.decode, z, **self._tiling(tile_sample_min_height, tile_sample_min_width,
                                                              tile_overlap_factor_height, tile_overlap_factor_width))
        return Tensor(out)

    def encode_tiled(self, x: Tensor, *, tile_sample_min_height: int | None = None,
                     tile_sample_min_width: int | None = None, tile_overlap_factor_height: float = 1 / 6,
                     tile_overlap_factor_width: float = 1 / 5) -> DiagonalGaussian:
        out = vae_encode_tiled(self.encode_moments, x, **self._tiling(
            tile_sample_min_height, tile_sample_min_width, tile_overlap_factor_height, tile_overlap_factor_width))
        return DiagonalGaussian(Tensor(out))

    def num_frames(self, latent_frames: int) -> int:
        """Video frames decoded from ``latent_frames`` (chunked decode): 3 -> 9, 5 -> 17, 13 -> 49."""
        n = self.num_latent_frames_batch_size
        sizes = [e - s for s, e in frame_chunks(latent_frames, n)]
        r = self.temporal_ratio
        return sum(r * (k - 1) + 1 if k % 2 == 1 else r * k for k in sizes)
