"""The shared fast paths of toolkit/models/layers.py against PyTorch's own operators.

Convolutions take one of five routes (a 1x1 matmul, Winograd F(2x2, 3x3) for 3x3 stride-1 pad-1, one product of
gathered patches for strided ones and for few input channels, one product of gathered frame rows for temporal-only
kernels, shifted row products for the rest); group norm and nearest resizing are built from matmuls, gathers and the
inference BatchNorm kernel. Each route is checked on the geometries the networks use, including the
awkward ones (odd sizes, batches, temporal padding, strides, a large mean).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mindspore import Tensor

from toolkit.models import layers
from toolkit.models.layers import (GroupNorm, channels_first, channels_last_rows, conv_shifted_matmul,
                                   resize_nearest)

F = torch.nn.functional


def _conv_case(rng, x_shape, w_shape):
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.2).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("x_shape, w_shape, padding, stride", [
    ((2, 5, 9, 7), (6, 5, 3, 3), ((1, 1), (1, 1)), (1, 1)),                 # Winograd, batch, odd sizes
    ((1, 4, 5, 6, 7), (3, 4, 3, 3, 3), ((0, 0), (1, 1), (1, 1)), (1, 1, 1)),  # Winograd, 3 temporal taps
    ((2, 4, 3, 5, 4), (3, 4, 3, 3, 3), ((2, 0), (1, 1), (1, 1)), (1, 1, 1)),  # Winograd, batch + causal pad
    ((1, 4, 3, 6, 5), (3, 4, 1, 3, 3), ((0, 0), (1, 1), (1, 1)), (1, 1, 1)),  # Winograd, one-frame kernel
    ((2, 3, 9, 8), (5, 3, 3, 3), ((0, 1), (0, 1)), (2, 2)),                 # shifted rows, stride 2, one-sided
    ((2, 3, 8, 8), (5, 3, 2, 2), ((0, 0), (0, 0)), (2, 2)),                 # shifted rows, patchify
    ((1, 3, 4, 5, 6), (2, 3, 3, 1, 1), ((1, 1), (0, 0), (0, 0)), (1, 1, 1)),  # temporal only
    ((2, 3, 5, 2, 3), (4, 3, 3, 1, 1), ((2, 0), (0, 0), (0, 0)), (1, 1, 1)),  # temporal only, batch, causal
    ((3, 2, 4, 3, 2), (5, 2, 3, 1, 1), ((1, 1), (0, 0), (0, 0)), (1, 1, 1)),  # temporal only, batch, both sides
    ((1, 3, 4, 5, 6), (2, 3, 3, 1, 2), ((1, 1), (0, 0), (0, 0)), (1, 1, 1)),  # shifted rows
    ((2, 6, 4, 5), (7, 6, 1, 1), ((0, 0), (0, 0)), (1, 1)),                 # pointwise, kernel per sample
    ((3, 8, 2, 2), (9, 8, 1, 1), ((0, 0), (0, 0)), (1, 1)),                 # pointwise, samples as columns
    ((1, 4, 3, 5), (5, 4, 1, 1), ((0, 0), (0, 0)), (1, 1)),                 # pointwise, one sample
    ((1, 2, 3, 5, 4), (60, 2, 3, 3, 3), ((2, 0), (1, 1), (1, 1)), (1, 1, 1)),  # patches: few inputs, causal pad
    ((2, 1, 5, 6), (12, 1, 3, 3), ((1, 1), (1, 1)), (1, 1)),                # patches: few inputs, batch
])
def test_convolution_matches_torch(rng, x_shape, w_shape, padding, stride):
    x, w, b = _conv_case(rng, x_shape, w_shape)
    ours = conv_shifted_matmul(Tensor(x), Tensor(w), Tensor(b), padding, stride).asnumpy()
    xt = torch.from_numpy(x)
    if len(x_shape) == 4:
        xt = F.pad(xt, (padding[1][0], padding[1][1], padding[0][0], padding[0][1]))
        ref = F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), stride=stride)
    else:
        xt = F.pad(xt, (padding[2][0], padding[2][1], padding[1][0], padding[1][1], padding[0][0], padding[0][1]))
        ref = F.conv3d(xt, torch.from_numpy(w), torch.from_numpy(b), stride=stride)
    assert ours.shape == tuple(ref.shape)
    np.testing.assert_allclose(ours, ref.numpy(), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("x_shape, w_shape, padding, stride", [
    ((2, 3, 9, 8), (5, 3, 3, 3), ((0, 1), (0, 1)), (2, 2)),       # a 2x downsampler, padded on one side
    ((1, 3, 10, 9), (4, 3, 4, 4), ((0, 0), (0, 0)), (4, 4)),      # a patch embedding; the remainder is dropped
    ((1, 2, 5, 6, 6), (3, 2, 3, 3, 3), ((2, 0), (1, 1), (1, 1)), (1, 2, 2)),  # spatial stride, causal time pad
])
@pytest.mark.parametrize("budget", [0, layers.PATCHES_MAX_BYTES])  # shifted rows, gathered patches
def test_strided_convolution_matches_torch_by_both_routes(rng, monkeypatch, x_shape, w_shape, padding, stride,
                                                          budget):
    monkeypatch.setattr(layers, "PATCHES_MAX_BYTES", budget)
    x, w, b = _conv_case(rng, x_shape, w_shape)
    ours = conv_shifted_matmul(Tensor(x), Tensor(w), Tensor(b), padding, stride).asnumpy()
    conv = F.conv2d if len(x_shape) == 4 else F.conv3d
    flat = tuple(p for pair in reversed(padding) for p in pair)
    ref = conv(F.pad(torch.from_numpy(x), flat), torch.from_numpy(w), torch.from_numpy(b), stride=stride)
    assert ours.shape == tuple(ref.shape)
    np.testing.assert_allclose(ours, ref.numpy(), atol=2e-5, rtol=1e-5)


ROW_PAIR = 4 * 16 * 3 * 5 * 4  # bytes of Winograd temporaries per two output rows: width 6, 5 channels


@pytest.mark.parametrize("budget, band_tiles, first_piece", [
    (2 * 3 * ROW_PAIR, 10 ** 9, ((0, 2), (0, 5))),  # two whole frames
    (ROW_PAIR, 10 ** 9, ((0, 1), (0, 2))),          # two rows of one frame
    (6 * ROW_PAIR, 12, ((0, 4), (0, 2))),           # two rows across all frames (4 output, 6 input frames)
])
@pytest.mark.parametrize("batched", [0, 2 ** 40])  # one product per (tile element, tap), or batched per tap
def test_winograd_in_pieces_equals_torch(rng, monkeypatch, budget, band_tiles, first_piece, batched):
    monkeypatch.setattr(layers, "WINOGRAD_PIECE_BYTES", budget)
    monkeypatch.setattr(layers, "WINOGRAD_BATCHED_BYTES", batched)
    monkeypatch.setattr(layers, "WINOGRAD_BAND_MIN_TILES", band_tiles)
    assert layers._winograd_pieces(4, 5, 6, 5, budget, 3, band_tiles)[0] == first_piece
    x, w, b = _conv_case(rng, (1, 5, 4, 5, 6), (4, 5, 3, 3, 3))
    ours = conv_shifted_matmul(Tensor(x), Tensor(w), Tensor(b), ((2, 0), (1, 1), (1, 1)), (1, 1, 1)).asnumpy()
    ref = F.conv3d(F.pad(torch.from_numpy(x), (1, 1, 1, 1, 2, 0)), torch.from_numpy(w), torch.from_numpy(b))
    np.testing.assert_allclose(ours, ref.numpy(), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("budget, bands", [(10 ** 9, 1), (2 * 5 * 288, 3), (1, 6)])  # 288 bytes of taps a pixel
def test_temporal_convolution_in_bands_of_rows_equals_torch(rng, monkeypatch, budget, bands):
    """Taps over TEMPORAL_PIECE_BYTES go band by band of image rows (equal bands: a divisor of the height), with a
    batch and padding on both sides; compiled as eagerly."""
    import mindspore as ms

    monkeypatch.setattr(layers, "TEMPORAL_PIECE_BYTES", budget)
    x, w, b = _conv_case(rng, (2, 3, 4, 6, 5), (4, 3, 3, 1, 1))
    assert layers.temporal_bands(6, 5, 3 * 3 * 2 * 4 * 4, budget) == bands  # taps x channels x samples x frames x 4
    padding = ((1, 1), (0, 0), (0, 0))

    def conv(v):
        return conv_shifted_matmul(v, Tensor(w), Tensor(b), padding, (1, 1, 1))
    ref = F.conv3d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=(1, 0, 0)).numpy()
    np.testing.assert_allclose(conv(Tensor(x)).asnumpy(), ref, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(ms.jit(conv)(Tensor(x)).asnumpy(), ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("x_shape, w_shape, budget, band_tiles", [
    ((3, 5, 5, 6), (4, 5, 3, 3), ROW_PAIR, 12),                 # 2-D, bands of rows of every frame
    ((1, 5, 4, 5, 6), (4, 5, 3, 3, 3), 6 * ROW_PAIR, 12),       # temporal taps, bands across all frames
    ((1, 5, 4, 5, 6), (4, 5, 3, 3, 3), 6 * ROW_PAIR, 10 ** 9),  # temporal taps, two whole frames a piece
])
def test_winograd_in_pieces_compiled_equals_eager(rng, monkeypatch, x_shape, w_shape, budget, band_tiles):
    """Under mindspore.jit the pieces are unrolled into the graph and joined as eagerly."""
    import mindspore as ms

    monkeypatch.setattr(layers, "WINOGRAD_PIECE_BYTES", budget)
    monkeypatch.setattr(layers, "WINOGRAD_BAND_MIN_TILES", band_tiles)
    x, w, b = _conv_case(rng, x_shape, w_shape)
    padding = ((1, 1),) * (len(x_shape) - 2) if len(x_shape) == 4 else ((2, 0), (1, 1), (1, 1))
    stride = (1,) * (len(x_shape) - 2)
    weight, bias = Tensor(w), Tensor(b)

    def conv(v):
        return conv_shifted_matmul(v, weight, bias, padding, stride)
    eager = conv(Tensor(x)).asnumpy()
    np.testing.assert_allclose(ms.jit(conv)(Tensor(x)).asnumpy(), eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("frames, height, width, fits", [
    (4, 128, 128, True),    # the benchmark's SD/SVD VAE decode at real widths
    (1, 512, 512, True),    # one AnimateDiff frame at 512x512
    (16, 512, 512, False),  # a 16-frame AnimateDiff chunk in one graph
    (14, 576, 1024, False),  # a real SVD chunk
])
def test_only_vae_decodes_of_few_convolution_pieces_are_compiled_as_one_graph(frames, height, width, fits):
    assert layers.fits_compiled_graph(frames, height, width, 128) is fits


@pytest.mark.parametrize("route", ["identity product", "gather"])
def test_channels_last_rows_and_back_are_exact(rng, monkeypatch, route):
    monkeypatch.setattr(layers, "GATHER_LAYOUT_CHANNELS", 5 if route == "gather" else 10 ** 9)
    x = rng.standard_normal((3, 5, 4, 6)).astype(np.float32)
    rows = channels_last_rows(Tensor(x)).asnumpy()
    np.testing.assert_array_equal(rows, x.transpose(0, 2, 3, 1).reshape(-1, 5))
    np.testing.assert_array_equal(channels_first(Tensor(rows), 3, (4, 6)).asnumpy(), x)


@pytest.mark.parametrize("route", ["fused kernel", "statistics + BatchNorm", "statistics by dot products + BatchNorm"])
@pytest.mark.parametrize("shape, groups", [((2, 8, 5, 7), 4), ((1, 6, 3, 4, 5), 3)])
def test_group_norm_matches_torch_even_far_from_zero_mean(rng, shape, groups, route):
    x = (rng.standard_normal(shape) * 0.5 + 40.0).astype(np.float32)  # mean/std = 80: no E[x^2]-E[x]^2 shortcut
    norm = GroupNorm(groups, shape[1], eps=1e-6)
    norm.fused_below = 2 ** 40 if route == "fused kernel" else 0
    norm.squares_by_dot_from = 0 if "dot" in route else 2 ** 40
    weight = rng.standard_normal(shape[1]).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    norm.weight.set_data(Tensor(weight))
    norm.bias.set_data(Tensor(bias))
    ref = F.group_norm(torch.from_numpy(x), groups, torch.from_numpy(weight), torch.from_numpy(bias), 1e-6)
    np.testing.assert_allclose(norm(Tensor(x)).asnumpy(), ref.numpy(), atol=2e-5)


@pytest.mark.parametrize("shape, size", [((2, 3, 4, 5), (8, 10)), ((1, 2, 3, 4, 5), (5, 12, 10)),
                                         ((2, 3, 5, 7), (3, 11))])
def test_resize_nearest_matches_torch_interpolate(rng, shape, size):
    x = rng.standard_normal(shape).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=size, mode="nearest").numpy()
    np.testing.assert_array_equal(resize_nearest(Tensor(x), size).asnumpy(), ref)


@pytest.mark.parametrize("perm", [(0, 3, 4, 2, 1), (0, 3, 4, 1, 2), (1, 0, 2, 3, 4), (0, 1, 2, 3, 4)])
def test_permute_is_an_exact_transpose(rng, perm):
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(layers.permute(Tensor(x), perm).asnumpy(), x.transpose(perm))


def test_swap_middle_axes_is_an_exact_transpose(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    got = layers.swap_middle_axes(Tensor(x), 2, 3, 4).asnumpy()
    np.testing.assert_array_equal(got, x.transpose(0, 2, 1, 3))


def test_channel_bias_is_added_per_sample_and_channel(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    bias = rng.standard_normal((2, 3)).astype(np.float32)
    got = layers.add_channel_bias(Tensor(x), Tensor(bias)).asnumpy()
    np.testing.assert_array_equal(got, x + bias[:, :, None, None])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch_in_both_forms(rng, approximate):
    x = (rng.standard_normal(10000) * 4).astype(np.float32)
    ref = F.gelu(torch.from_numpy(x), approximate=approximate).numpy()
    np.testing.assert_allclose(layers.gelu(Tensor(x), approximate).asnumpy(), ref, atol=3e-6, rtol=1e-6)


LAYER_NORM_ROUTES = ["fused kernel", "rows by BatchNorm"]


@pytest.mark.parametrize("route", LAYER_NORM_ROUTES)
@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, False)])
def test_layer_norm_matches_torch_even_far_from_zero_mean(rng, route, affine, bias):
    x = (rng.standard_normal((2, 7, 48)) * 0.5 + 40.0).astype(np.float32)
    norm = layers.LayerNorm(48, eps=1e-6, elementwise_affine=affine, bias=bias)
    norm.rows_by_batch_norm = route == "rows by BatchNorm"
    ref = torch.nn.LayerNorm(48, eps=1e-6, elementwise_affine=affine, bias=bias)
    if affine:
        weight = rng.standard_normal(48).astype(np.float32)
        norm.weight.set_data(Tensor(weight))
        ref.weight.data = torch.from_numpy(weight)
    if bias:
        b = rng.standard_normal(48).astype(np.float32)
        norm.bias.set_data(Tensor(b))
        ref.bias.data = torch.from_numpy(b)
    np.testing.assert_allclose(norm(Tensor(x)).asnumpy(), ref(torch.from_numpy(x)).detach().numpy(), atol=2e-5)


@pytest.mark.parametrize("route", LAYER_NORM_ROUTES)
def test_layer_norm_modulate_is_the_norm_then_scale_and_shift(rng, route):
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    scale, shift = (rng.standard_normal((2, 1, 16)).astype(np.float32) for _ in range(2))
    norm = layers.LayerNorm(16, eps=1e-5)
    norm.rows_by_batch_norm = route == "rows by BatchNorm"
    norm.weight.set_data(Tensor(rng.standard_normal(16).astype(np.float32)))
    norm.bias.set_data(Tensor(rng.standard_normal(16).astype(np.float32)))
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (16,), torch.from_numpy(norm.weight.asnumpy()),
                                         torch.from_numpy(norm.bias.asnumpy()), 1e-5).numpy() * (1 + scale) + shift
    got = norm.modulate(Tensor(x), Tensor(scale), Tensor(shift)).asnumpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_layer_norm_by_batch_norm_compiled_stays_right_call_after_call(rng):
    """The BatchNorm kernel overwrites its running statistics on every call; they must never be the scale or
    offset it normalises with, also when one compiled graph normalises two inputs of the same shape."""
    import mindspore as ms

    norm = layers.LayerNorm(32, eps=1e-6, elementwise_affine=False)
    norm.rows_by_batch_norm = True
    a, b = (rng.standard_normal((3, 32)).astype(np.float32) * s + m for s, m in ((2.0, 5.0), (0.5, -3.0)))
    ref = [torch.nn.functional.layer_norm(torch.from_numpy(v), (32,), eps=1e-6).numpy() for v in (a, b)]

    def both(u, v):
        return norm(u) + 2 * norm(v)
    both = ms.jit(both)
    for _ in range(3):
        np.testing.assert_allclose(both(Tensor(a), Tensor(b)).asnumpy(), ref[0] + 2 * ref[1], atol=1e-5)


def test_layer_norms_by_batch_norm_sets_every_layer_norm_of_a_network():
    net = layers.Attention(16, heads=2, dim_head=8, qk_norm="layer_norm")
    assert not net.norm_q.rows_by_batch_norm and not net.norm_k.rows_by_batch_norm
    assert layers.layer_norms_by_batch_norm(net) is net
    assert net.norm_q.rows_by_batch_norm and net.norm_k.rows_by_batch_norm


@pytest.mark.parametrize("budget, max_bands, bands", [
    (10 ** 9, 32, (11,)),                          # whole
    (3 * 2 * 3 * 9 * 4, 32, (3, 3, 3, 2)),         # three queries' scores a band
    (1, 32, (1,) * 11),                            # one query a band
    (1, 4, (3, 3, 3, 2)),                          # no more bands than MAX_BANDS: they grow instead
])
@pytest.mark.parametrize("mask_shape", [None, (2, 1, 11, 9), (1, 1, 1, 9)])
def test_attention_in_bands_of_queries_equals_torch(rng, monkeypatch, budget, max_bands, bands, mask_shape):
    """Scores over ATTENTION_SCORES_BYTES are computed a band of queries at a time, with a mask per query split
    with them and a broadcast one reused; compiled as eagerly."""
    import mindspore as ms

    monkeypatch.setattr(layers, "ATTENTION_SCORES_BYTES", budget)
    monkeypatch.setattr(layers, "MAX_BANDS", max_bands)
    q = rng.standard_normal((2, 3, 11, 8)).astype(np.float32)
    k, v = (rng.standard_normal((2, 3, 9, 8)).astype(np.float32) for _ in range(2))
    mask = None if mask_shape is None else rng.standard_normal(mask_shape).astype(np.float32)
    assert layers.equal_bands(11, 2 * 3 * 9 * 4, budget, max_bands) == bands  # queries of 2 x 3 heads x 9 keys fp32
    ref = F.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)),
                                         attn_mask=None if mask is None else torch.from_numpy(mask)).numpy()

    def attend(*args):
        return layers.scaled_dot_product_attention(*args)
    args = [Tensor(a) for a in (q, k, v)] + ([] if mask is None else [Tensor(mask)])
    np.testing.assert_allclose(attend(*args).asnumpy(), ref, atol=1e-5)
    np.testing.assert_allclose(ms.jit(attend)(*args).asnumpy(), ref, atol=1e-5)
