"""Spatial tiling for video VAEs: geometry plus a callable. Family-independent, no framework imports.

A large input is cut into overlapping spatial tiles; each tile goes through ``fn`` (a whole untiled
decode or encode, including its own temporal chunking); each output tile is cross-faded with its
already-blended upper and left neighbours over ``blend`` rows/columns and cropped to ``keep``.
This is diffusers' ``tiled_decode`` / ``tiled_encode`` of AutoencoderKLCogVideoX
(diffusers/models/autoencoders/autoencoder_kl_cogvideox.py), written as pure functions: its
in-place ``blend_v``/``blend_h`` mutate a tile that later serves as the upper / left neighbour, so
the neighbour used here is the *blended* tile, which reproduces its numbers exactly.

Arrays are (..., H, W): the last two axes are spatial (the toolkit's layout is (B, C, F, H, W)).
``fn`` may take and return any array type with numpy-style slicing (MindSpore / torch tensors,
numpy); results are assembled on the host as float32 numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def _host(a) -> np.ndarray:
    a = a.asnumpy() if hasattr(a, "asnumpy") else np.asarray(a)
    return a.astype(np.float32, copy=False)


def tile_grid(size: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """Input spans ``(start, end)`` along one axis: starts 0, stride, 2*stride, ... < size, each
    ``tile`` long and clipped at ``size`` (so the last tiles may be shorter)."""
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile_grid: tile={tile} and stride={stride} must be positive")
    return [(s, min(s + tile, size)) for s in range(0, size, stride)]


def blend_weights(extent: int) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fade weights over ``extent`` positions: (weight of the earlier tile, weight of the later
    tile) = (1 - y/extent, y/extent), y = 0..extent-1, each rounded once to float32 as diffusers'
    scalar products are. They sum to 1 (to float32 rounding)."""
    y = np.arange(extent, dtype=np.float64) / extent
    return (1.0 - y).astype(np.float32), y.astype(np.float32)


def _blend(a: np.ndarray, b: np.ndarray, extent: int, axis: int) -> np.ndarray:
    e = min(a.shape[axis], b.shape[axis], extent)
    if e <= 0:
        return b
    w_prev, w_next = blend_weights(e)
    shape = [1] * b.ndim
    shape[axis] = e
    w_prev, w_next = w_prev.reshape(shape), w_next.reshape(shape)
    head = [slice(None)] * b.ndim
    tail = list(head)
    head[axis] = slice(0, e)
    tail[axis] = slice(a.shape[axis] - e, a.shape[axis])
    out = b.copy()
    out[tuple(head)] = a[tuple(tail)] * w_prev + b[tuple(head)] * w_next
    return out


def blend_v(a: np.ndarray, b: np.ndarray, extent: int) -> np.ndarray:
    """``b`` with its first rows cross-faded from the last rows of ``a`` (the tile above); a new array."""
    return _blend(a, b, extent, b.ndim - 2)


def blend_h(a: np.ndarray, b: np.ndarray, extent: int) -> np.ndarray:
    """``b`` with its first columns cross-faded from the last columns of ``a`` (the tile to the left)."""
    return _blend(a, b, extent, b.ndim - 1)


@dataclass(frozen=True)
class TileGeometry:
    """Per spatial axis (height, width): input ``tile`` size and ``stride``; output ``blend`` extent
    and ``keep`` (rows/columns each output tile contributes). ``ratio`` = output/input size."""

    tile: tuple[int, int]
    stride: tuple[int, int]
    blend: tuple[int, int]
    keep: tuple[int, int]
    ratio: float

    def check(self) -> "TileGeometry":
        """Every output pixel is produced exactly once iff stride * ratio == keep on both axes."""
        for ax, name in enumerate(("height", "width")):
            if self.stride[ax] * self.ratio != self.keep[ax] or self.stride[ax] <= 0:
                raise ValueError(
                    f"tiling {name}: input stride {self.stride[ax]} x ratio {self.ratio:g} != {self.keep[ax]} output "
                    f"rows kept per tile ({self}); the output would have the wrong size (diffusers returns it "
                    "silently). Choose tile sizes whose latent tile size times (1 - overlap) is a whole number.")
        return self


def cogvideox_tile_geometry(tile_sample_min_height: int, tile_sample_min_width: int, spatial_ratio: int,
                            tile_overlap_factor_height: float = 1 / 6, tile_overlap_factor_width: float = 1 / 5,
                            *, encode: bool = False) -> TileGeometry:
    """diffusers' AutoencoderKLCogVideoX tiling arithmetic (``enable_tiling`` + ``tiled_decode`` /
    ``tiled_encode``), int() truncations included. Decode tiles the latent, encode the sample."""
    sample = (tile_sample_min_height, tile_sample_min_width)
    latent = tuple(int(s / spatial_ratio) for s in sample)
    factor = (tile_overlap_factor_height, tile_overlap_factor_width)
    src, dst = (sample, latent) if encode else (latent, sample)
    stride = tuple(int(src[a] * (1 - factor[a])) for a in range(2))
    blend = tuple(int(dst[a] * factor[a]) for a in range(2))
    keep = tuple(dst[a] - blend[a] for a in range(2))
    return TileGeometry(tile=src, stride=stride, blend=blend, keep=keep,
                        ratio=(1 / spatial_ratio) if encode else spatial_ratio)


def tiled_apply(fn: Callable, x, geometry: TileGeometry) -> np.ndarray:
    """Apply ``fn`` tile by tile over the last two axes of ``x`` and blend (see module docstring)."""
    g = geometry.check()
    h, w = x.shape[-2], x.shape[-1]
    rows = tile_grid(h, g.tile[0], g.stride[0])
    cols = tile_grid(w, g.tile[1], g.stride[1])
    above: list = []
    out_rows = []
    for i, (y0, y1) in enumerate(rows):
        row: list = []
        for j, (x0, x1) in enumerate(cols):
            t = _host(fn(x[..., y0:y1, x0:x1]))
            if i > 0:
                t = blend_v(above[j], t, g.blend[0])
            if j > 0:
                t = blend_h(row[j - 1], t, g.blend[1])
            row.append(t)
        out_rows.append(np.concatenate([t[..., :g.keep[0], :g.keep[1]] for t in row], -1))
        above = row
    return np.concatenate(out_rows, -2)


def vae_decode_tiled(decode_fn: Callable, z, *, tile_sample_min_height: int, tile_sample_min_width: int,
                     spatial_ratio: int = 8, tile_overlap_factor_height: float = 1 / 6,
                     tile_overlap_factor_width: float = 1 / 5) -> np.ndarray:
    """diffusers' CogVideoX ``_decode`` with tiling enabled: a latent no larger than one latent tile
    (``int(tile_sample_min / spatial_ratio)``) is decoded whole; otherwise tile by tile and blended."""
    g = cogvideox_tile_geometry(tile_sample_min_height, tile_sample_min_width, spatial_ratio,
                                tile_overlap_factor_height, tile_overlap_factor_width)
    if z.shape[-2] <= g.tile[0] and z.shape[-1] <= g.tile[1]:
        return _host(decode_fn(z))
    return tiled_apply(decode_fn, z, g)


def vae_encode_tiled(encode_fn: Callable, x, *, tile_sample_min_height: int, tile_sample_min_width: int,
                     spatial_ratio: int = 8, tile_overlap_factor_height: float = 1 / 6,
                     tile_overlap_factor_width: float = 1 / 5) -> np.ndarray:
    """diffusers' CogVideoX ``_encode`` with tiling enabled (``encode_fn`` returns the moments, e.g.
    mean and log-variance stacked on channels): a sample no larger than one tile is encoded whole."""
    g = cogvideox_tile_geometry(tile_sample_min_height, tile_sample_min_width, spatial_ratio,
                                tile_overlap_factor_height, tile_overlap_factor_width, encode=True)
    if x.shape[-2] <= g.tile[0] and x.shape[-1] <= g.tile[1]:
        return _host(encode_fn(x))
    return tiled_apply(encode_fn, x, g)
