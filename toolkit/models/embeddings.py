"""Positional embeddings shared by the video transformers.

Tables are computed once on the host with numpy (they depend only on shapes) and handed to the
networks as constants; only ``apply_rotary`` runs on the device. The numerics follow diffusers
(``diffusers/models/embeddings.py``: ``get_3d_sincos_pos_embed``, ``get_3d_rotary_pos_embed``,
``get_1d_rotary_pos_embed``, ``apply_rotary_emb``; ``pipelines/cogvideo/pipeline_cogvideox.py``:
``get_resize_crop_region_for_grid``, ``_prepare_rotary_positional_embeddings``), including which
steps are float32 and which float64, so the tables agree with diffusers' to float32 rounding.
"""
from __future__ import annotations

import functools

import numpy as np
from mindspore import Tensor, ops

# ----------------------------------------------------------------------------- sin-cos (absolute)


def sincos_1d(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """[sin(pos * w_i), cos(pos * w_i)] with w_i = 10000^(-2i/D): (M, D) float64 (diffusers computes this in float64)."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim={embed_dim} must be even")
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.outer(np.asarray(pos, np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_3d(embed_dim: int, spatial_size: tuple[int, int], temporal_size: int,
              spatial_interpolation_scale: float = 1.0, temporal_interpolation_scale: float = 1.0) -> np.ndarray:
    """3-D sin-cos positional embedding, (T, H*W, D) float64, tokens in (h, w) row-major order per frame.

    ``spatial_size`` is (width, height), as in diffusers. The last 3/4 of the channels encode space
    (first half of those from the w coordinate, second half from h), the first 1/4 encode time.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by 4")
    width, height = spatial_size
    dim_spatial, dim_temporal = 3 * embed_dim // 4, embed_dim // 4
    # positions are float32 in diffusers (arange / scale), the trigonometry float64
    grid_h = np.arange(height, dtype=np.float32) / np.float32(spatial_interpolation_scale)
    grid_w = np.arange(width, dtype=np.float32) / np.float32(spatial_interpolation_scale)
    ww, hh = np.meshgrid(grid_w, grid_h, indexing="xy")  # (H, W) each
    spatial = np.concatenate([sincos_1d(dim_spatial // 2, ww), sincos_1d(dim_spatial // 2, hh)], axis=1)
    grid_t = np.arange(temporal_size, dtype=np.float32) / np.float32(temporal_interpolation_scale)
    temporal = sincos_1d(dim_temporal, grid_t)  # (T, D/4)
    spatial = np.broadcast_to(spatial[None], (temporal_size, height * width, dim_spatial))
    temporal = np.broadcast_to(temporal[:, None], (temporal_size, height * width, dim_temporal))
    return np.concatenate([temporal, spatial], axis=-1)


@functools.lru_cache(maxsize=16)
def cogvideox_sincos_table(embed_dim: int, latent_frames: int, latent_height: int, latent_width: int,
                           patch_size: int, spatial_interpolation_scale: float = 1.875,
                           temporal_interpolation_scale: float = 1.0) -> np.ndarray:
    """CogVideoX 1.0 (2b) absolute positional table for the video tokens: (F*H/p*W/p, D) float32.

    diffusers adds a joint (text + video) table whose text rows are zero; this is its video part.
    The result is cached per shape and must not be modified.
    """
    table = sincos_3d(embed_dim, (latent_width // patch_size, latent_height // patch_size), latent_frames,
                      spatial_interpolation_scale, temporal_interpolation_scale)
    table = np.ascontiguousarray(table.reshape(-1, embed_dim).astype(np.float32))
    table.flags.writeable = False
    return table


# ----------------------------------------------------------------------------- rotary


def rotary_1d(dim: int, pos: np.ndarray, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of pos * theta^(-2i/dim), each repeated twice along the channel axis (interleaved pairs):
    (M, dim) float32 each, computed in float32 like diffusers' ``get_1d_rotary_pos_embed(use_real=True)``."""
    if dim % 2:
        raise ValueError(f"rotary dim={dim} must be even")
    freqs = np.float32(1.0) / (np.float32(theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    angles = np.outer(np.asarray(pos, np.float32), freqs).astype(np.float32)
    return np.repeat(np.cos(angles), 2, axis=1), np.repeat(np.sin(angles), 2, axis=1)


def _linspace_f32(start: float, stop: float, num: int) -> np.ndarray:
    return np.linspace(start, stop, num, dtype=np.float64).astype(np.float32)


def rotary_3d(embed_dim: int, grid_t: np.ndarray, grid_h: np.ndarray, grid_w: np.ndarray,
              theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """3-D rotary table on the given axis positions: (T*H*W, embed_dim) cos and sin, channels split
    [time D/4 | height 3D/8 | width 3D/8], tokens in (t, h, w) row-major order."""
    dims = (embed_dim // 4, embed_dim // 8 * 3, embed_dim // 8 * 3)
    nt, nh, nw = len(grid_t), len(grid_h), len(grid_w)
    out = []
    for part in (0, 1):  # cos, sin
        ft, fh, fw = (rotary_1d(d, g, theta)[part] for d, g in zip(dims, (grid_t, grid_h, grid_w)))
        table = np.concatenate([
            np.broadcast_to(ft[:, None, None], (nt, nh, nw, dims[0])),
            np.broadcast_to(fh[None, :, None], (nt, nh, nw, dims[1])),
            np.broadcast_to(fw[None, None, :], (nt, nh, nw, dims[2])),
        ], axis=-1)
        out.append(np.ascontiguousarray(table.reshape(nt * nh * nw, -1)))
    return out[0], out[1]


def resize_crop_region_for_grid(src: tuple[int, int], tgt_width: int, tgt_height: int):
    """Top-left and bottom-right corners of ``src`` = (h, w) fitted (aspect kept) and centred in the
    (tgt_height, tgt_width) base grid (diffusers' ``get_resize_crop_region_for_grid``)."""
    h, w = src
    if h / w > tgt_height / tgt_width:
        resize_height, resize_width = tgt_height, int(round(tgt_height / h * w))
    else:
        resize_width, resize_height = tgt_width, int(round(tgt_width / w * h))
    crop_top = int(round((tgt_height - resize_height) / 2.0))
    crop_left = int(round((tgt_width - resize_width) / 2.0))
    return (crop_top, crop_left), (crop_top + resize_height, crop_left + resize_width)


def cogvideox_rotary_table(attention_head_dim: int, latent_frames: int, latent_height: int, latent_width: int,
                           patch_size: int, sample_height: int, sample_width: int,
                           patch_size_t: int | None = None,
                           theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """The (cos, sin) rotary tables CogVideoX's pipeline builds for a latent of the given size:
    (tokens, attention_head_dim) float32 each, tokens ordered (t, h, w) as the patch embedding emits them.

    CogVideoX 1.0 (``patch_size_t`` None): positions are a linspace over the crop region that the
    token grid occupies when fitted into the base grid (sample size / patch size); time 0..F-1.
    CogVideoX 1.5: integer positions 0..n-1 on every axis ("slice" grid), time in units of
    ``patch_size_t`` latent frames; the grid may not exceed the base grid.
    """
    grid_h, grid_w = latent_height // patch_size, latent_width // patch_size
    base_h, base_w = sample_height // patch_size, sample_width // patch_size
    if patch_size_t is None:
        (top, left), (bottom, right) = resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        pos_h = _linspace_f32(top, bottom * (grid_h - 1) / grid_h, grid_h)
        pos_w = _linspace_f32(left, right * (grid_w - 1) / grid_w, grid_w)
        t = latent_frames
        pos_t = _linspace_f32(0, t * (t - 1) / t, t)  # = 0..t-1
    else:
        if grid_h > base_h or grid_w > base_w:
            raise ValueError(f"token grid {grid_h}x{grid_w} exceeds the model's base grid {base_h}x{base_w} "
                             "(sample_height/sample_width // patch_size); CogVideoX 1.5 slices its table from it")
        t = (latent_frames + patch_size_t - 1) // patch_size_t
        pos_t = np.arange(t, dtype=np.float32)
        pos_h = np.arange(grid_h, dtype=np.float32)
        pos_w = np.arange(grid_w, dtype=np.float32)
    return rotary_3d(attention_head_dim, pos_t, pos_h, pos_w, theta)


_PAIR_ROTATIONS: dict = {}


def pair_rotation(dim: int) -> Tensor:
    """The (dim, dim) matrix R with x @ R = (-x1, x0, -x3, x2, ...): rotating interleaved pairs by 90
    degrees as one small matmul (a stack + reshape of the pairs is several times slower on CPU)."""
    if dim not in _PAIR_ROTATIONS:
        r = np.zeros((dim, dim), np.float32)
        r[np.arange(1, dim, 2), np.arange(0, dim, 2)] = -1.0
        r[np.arange(0, dim, 2), np.arange(1, dim, 2)] = 1.0
        _PAIR_ROTATIONS[dim] = Tensor(r)
    return _PAIR_ROTATIONS[dim]


def apply_rotary(x, cos, sin, rotation=None):
    """Rotate interleaved channel pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).

    ``x`` (..., S, D); ``cos``/``sin`` (S, D) with each frequency repeated for both members of a pair
    (as ``rotary_1d`` builds them); ``rotation`` = ``pair_rotation(D)`` (pass it in from a Cell so a
    compiled graph sees a constant). Real-valued form of diffusers' ``apply_rotary_emb(use_real=True,
    use_real_unbind_dim=-1)``.
    """
    if rotation is None:
        rotation = pair_rotation(x.shape[-1])
    return x * cos + ops.matmul(x, rotation) * sin
