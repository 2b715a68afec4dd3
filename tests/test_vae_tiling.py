"""Spatial VAE tiling as geometry plus a callable (toolkit/vae_tiling.py). No torch, no weights:
position-independent stand-in decoders / encoders, for which tiling must change nothing."""
from __future__ import annotations

import numpy as np
import pytest

from toolkit.vae_tiling import (TileGeometry, blend_h, blend_v, blend_weights, cogvideox_tile_geometry,
                                tiled_apply, tile_grid, vae_decode_tiled, vae_encode_tiled)

# 48x40-pixel tiles = 6x5 latent tiles at 8x: with diffusers' default overlaps (1/6, 1/5) the strides
# (5, 4 latents) times 8 equal the rows/columns kept per tile (40, 32), so tiles cover the output exactly.
TILES = dict(tile_sample_min_height=48, tile_sample_min_width=40, spatial_ratio=8)


def upsample8(z):
    """Stand-in decoder: nearest 8x upsampling of H and W (each output pixel depends on one latent)."""
    return np.repeat(np.repeat(np.asarray(z), 8, -2), 8, -1)


def pool8(x):
    """Stand-in encoder: 8x8 average pooling of H and W."""
    x = np.asarray(x)
    *lead, h, w = x.shape
    return x.reshape(*lead, h // 8, 8, w // 8, 8).mean((-3, -1))


def test_tile_grid_starts_every_stride_and_clips_the_last_tiles():
    assert tile_grid(8, 6, 5) == [(0, 6), (5, 8)]
    assert tile_grid(10, 5, 4) == [(0, 5), (4, 9), (8, 10)]
    assert tile_grid(4, 6, 5) == [(0, 4)]


def test_tile_grid_covers_every_position():
    for size, tile, stride in [(8, 6, 5), (10, 5, 4), (37, 9, 7), (1, 3, 2)]:
        covered = np.zeros(size, bool)
        for s, e in tile_grid(size, tile, stride):
            covered[s:e] = True
        assert covered.all()


def test_blend_weights_sum_to_one_and_ramp_from_the_earlier_tile():
    w_prev, w_next = blend_weights(8)
    np.testing.assert_allclose(w_prev + w_next, 1.0, rtol=0, atol=6e-8)  # one float32 rounding each
    assert w_prev[0] == 1.0 and w_next[0] == 0.0
    assert np.all(np.diff(w_next) > 0)
    assert w_prev.dtype == w_next.dtype == np.float32


def test_blend_v_cross_fades_the_first_rows_from_the_tile_above():
    a = np.full((1, 1, 1, 4, 2), 10.0, np.float32)
    b = np.zeros((1, 1, 1, 3, 2), np.float32)
    out = blend_v(a, b, 2)
    np.testing.assert_array_equal(out[0, 0, 0, :, 0], [10.0, 5.0, 0.0])  # a*(1 - y/2) + b*(y/2), y = 0, 1
    assert np.all(b == 0), "blend_v must not modify its inputs"


def test_blend_h_cross_fades_the_first_columns_from_the_tile_to_the_left():
    a = np.arange(4, dtype=np.float32)[None, :].repeat(2, 0)  # columns 0 1 2 3
    b = np.full((2, 3), 8.0, np.float32)
    out = blend_h(a, b, 4)  # extent limited to b's 3 columns: a's last 3 columns (1 2 3) fade into b
    np.testing.assert_allclose(out[0], [1 * 1.0 + 8 * 0.0, 2 * (2 / 3) + 8 * (1 / 3), 3 * (1 / 3) + 8 * (2 / 3)],
                               rtol=1e-6)


def test_geometry_follows_diffusers_arithmetic_for_the_default_480x720_tiles():
    dec = cogvideox_tile_geometry(240, 360, 8)
    assert dec == TileGeometry(tile=(30, 45), stride=(25, 36), blend=(40, 72), keep=(200, 288), ratio=8)
    enc = cogvideox_tile_geometry(240, 360, 8, encode=True)
    assert enc == TileGeometry(tile=(240, 360), stride=(200, 288), blend=(5, 9), keep=(25, 36), ratio=1 / 8)


def test_inconsistent_geometry_is_rejected_instead_of_giving_a_wrong_size_output():
    # 16-pixel tiles: latent tile 2, stride int(2 * 5/6) = 1 latent = 8 px, but 14 rows kept per tile
    with pytest.raises(ValueError, match="wrong size"):
        vae_decode_tiled(upsample8, np.zeros((1, 4, 3, 8, 10), np.float32), tile_sample_min_height=16,
                         tile_sample_min_width=16)


def test_tiled_decode_of_a_position_independent_decoder_equals_untiled(rng):
    z = rng.standard_normal((1, 4, 3, 8, 10)).astype(np.float32)  # 2 x 3 overlapping latent tiles
    out = vae_decode_tiled(upsample8, z, **TILES)
    assert out.shape == (1, 4, 3, 64, 80)
    np.testing.assert_allclose(out, upsample8(z), rtol=0, atol=1e-6)


def test_tiled_decode_covers_every_output_pixel_once():
    g = cogvideox_tile_geometry(48, 40, 8)
    out = tiled_apply(lambda t: np.ones(upsample8(t).shape, np.float32), np.zeros((1, 1, 1, 19, 23), np.float32), g)
    assert out.shape == (1, 1, 1, 19 * 8, 23 * 8)
    np.testing.assert_allclose(out, 1.0, rtol=0, atol=1e-6)  # blend weights sum to 1 wherever tiles overlap


def test_tiled_encode_of_a_position_independent_encoder_equals_untiled(rng):
    x = rng.standard_normal((1, 3, 9, 64, 80)).astype(np.float32)  # 2 x 3 overlapping sample tiles
    out = vae_encode_tiled(pool8, x, **TILES)
    assert out.shape == (1, 3, 9, 8, 10)
    np.testing.assert_allclose(out, pool8(x), rtol=0, atol=1e-6)


def test_an_input_no_larger_than_one_tile_is_processed_whole(rng):
    calls = []

    def decode(z):
        calls.append(z.shape)
        return upsample8(z)

    z = rng.standard_normal((1, 4, 3, 6, 5)).astype(np.float32)  # exactly one 6x5 latent tile
    np.testing.assert_array_equal(vae_decode_tiled(decode, z, **TILES), upsample8(z))
    assert calls == [z.shape]


def test_each_tile_is_blended_with_its_already_blended_left_neighbour():
    """diffusers blends tiles in place, so a tile's left neighbour is used after its own blending.
    Three 2-wide tiles at stride 1 (blend 2, keep 1), constant 0, 1, 2: tile 1 becomes [0, 0.5];
    the 1-wide last tile takes tile 1's blended last column, 0.5 (the unblended tile would give 1)."""
    values = [0.0, 1.0, 2.0]
    g = TileGeometry(tile=(1, 2), stride=(1, 1), blend=(0, 2), keep=(1, 1), ratio=1)
    out = tiled_apply(lambda t: np.full(t.shape, values.pop(0), np.float32), np.zeros((1, 3), np.float32), g)
    np.testing.assert_array_equal(out, [[0.0, 0.0, 0.5]])
