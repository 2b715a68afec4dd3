"""Shared network blocks, written once for every family.

Every block is a MindSpore ``nn.Cell`` whose parameters carry the names PyTorch / diffusers
checkpoints use (``weight``/``bias``), so a safetensors file loads by name. Only operations that
have CPU kernels in MindSpore 2.10 are used (see shared/notes/mindspore-cpu.md): no ``mint``
conv / layer-norm / gelu / SDPA. Computation is float32 unless the caller casts.
"""
from __future__ import annotations

import functools
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import Normal, initializer

Linear = nn.Dense  # weight (out, in) + bias, same layout and names as torch.nn.Linear


def linear(in_features: int, out_features: int, bias: bool = True) -> nn.Dense:
    return nn.Dense(in_features, out_features, has_bias=bias)


def after(x, previous):
    """``x``, computed only once ``previous`` is. A compiled graph runs whatever is ready: independent pieces of
    one computation side by side, holding all their intermediates at once (9 bands of attention scores: 625 MB peak
    growth compiled, 174 MB in sequence), and computations of weights alone all at its start, holding every result
    until its use (an SVD UNet's rearranged convolution kernels: 6.65 GB on the first call, 2.76 GB after their
    inputs). Eagerly it is a no-op."""
    return x if previous is None else ops.depend(x, previous)


class LayerNorm(nn.Cell):
    """torch.nn.LayerNorm over the last dimension; ``weight``/``bias`` names (MindSpore's own uses gamma/beta).

    Two routes, the same numbers to ~2e-6: the fused ``ops.LayerNorm`` kernel, or (``rows_by_batch_norm``, which
    ``layer_norms_by_batch_norm`` sets on a network where it pays) MindSpore's training-mode BatchNorm kernel with the
    rows as its channels -- it takes each channel's statistics over the rest, here the row -- then the affine
    products: in a compiled graph 1.4-1.9x faster than the fused kernel alone on the CPU backend (0.24 vs 0.39 ms on
    604 x 256 values, 5.5 vs 10.4 ms on 4204 x 1024), but 3-5x slower eagerly (three operator calls instead of
    one). That kernel's statistics are one-pass: on rows far from zero mean it is less exact than torch (mean/std
    80 over 3072 values: 5e-5 off, torch's fp32 1.3e-5; 1000 over 1024: 4.5e-4 vs 8.8e-5), well inside the
    parity tolerances on transformer activations.
    """

    rows_by_batch_norm = False

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.dim = dim
        self.affine = elementwise_affine
        self.has_bias = bias and elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(Tensor(np.ones(dim, np.float32)))
            if bias:
                self.bias = Parameter(Tensor(np.zeros(dim, np.float32)))
        # the fused kernel always takes a scale and a shift: constants stand in for missing ones (not parameters:
        # not in the checkpoint)
        self.norm = ops.LayerNorm(-1, -1, eps)
        self.unit = Tensor(np.ones(dim, np.float32))
        self.zero = Tensor(np.zeros(dim, np.float32))
        self.normalize_rows = ops.BatchNorm(is_training=True, epsilon=eps)

    def _normalized(self, x):
        """(x - mean) / sqrt(var + eps) over the last dimension, no affine."""
        if not self.rows_by_batch_norm:
            return self.norm(x, self.unit, self.zero)[0]
        n = x.size // x.shape[-1]
        unit, zero, running_mean, running_var = _row_norm_inputs(n, x.dtype)
        return self.normalize_rows(x.reshape(1, n, -1, 1), unit, zero, running_mean, running_var)[0].reshape(x.shape)

    def construct(self, x):
        if not self.rows_by_batch_norm:  # the affine inside the one fused kernel
            return self.norm(x, self.weight if self.affine else self.unit,
                             self.bias if self.has_bias else self.zero)[0]
        y = self._normalized(x)
        if self.affine:
            y = y * self.weight
        if self.has_bias:
            y = y + self.bias
        return y

    def modulate(self, x, scale, shift):
        """``self(x) * (1 + scale) + shift`` (adaptive norms; ``scale``/``shift`` broadcast against ``x``) with the
        norm's own weight and bias folded into them: two passes over ``x`` after the normalisation instead of four."""
        factor = 1 + scale
        if self.has_bias:
            shift = self.bias * factor + shift
        if self.affine:
            factor = self.weight * factor
        return self._normalized(x) * factor + shift


def layer_norms_by_batch_norm(net: nn.Cell) -> nn.Cell:
    """Every ``LayerNorm`` of ``net`` by the BatchNorm route, compiled or eager alike (so ``runtime.jit=false``
    gives the compiled run's numbers). For the CogVideoX transformer: its step 10% faster compiled (31 vs 35 ms,
    small checkpoint). The UNets keep the fused kernel: there the route gained nothing at real widths (AnimateDiff
    4.64 vs 4.52 s a step, SVD 5.38 vs 5.28 s) and made compiles 25-40% longer (SVD 53 vs 38 s)."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, LayerNorm):
            cell.rows_by_batch_norm = True
    return net


@functools.lru_cache(maxsize=256)  # also keeps it host-side Python under mindspore.jit
def _row_norm_inputs(n: int, dtype) -> tuple:
    """Training-mode BatchNorm's inputs for normalising ``n`` rows: unit scale, zero offset, and two running
    statistics the kernel overwrites (scratch: the output uses the rows' own statistics). Separate tensors, so
    the overwritten pair never aliases the scale or offset."""
    return (Tensor(np.ones(n), dtype), Tensor(np.zeros(n), dtype), Tensor(np.zeros(n), dtype),
            Tensor(np.ones(n), dtype))


class RMSNorm(nn.Cell):
    """x * rsqrt(mean(x^2) + eps) * weight (T5 / diffusers RMSNorm), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.eps = eps
        self.affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(Tensor(np.ones(dim, np.float32)))

    def construct(self, x):
        y = x * ops.rsqrt((x * x).mean(-1, keep_dims=True) + self.eps)
        if self.affine:
            y = y * self.weight
        return y


class GroupNorm(nn.Cell):
    """torch.nn.GroupNorm on (B, C, *spatial); ``weight``/``bias`` names.

    Inputs of ``fused_below`` values or more are computed as group statistics by matrix-vector products
    plus MindSpore's inference BatchNorm kernel for the per-channel normalise-and-affine, 2-4x faster than
    ``mint`` group_norm on the CPU backend (whose broadcasting elementwise kernels are ~50x slower than
    same-shape ones); smaller ones use ``mint`` group_norm, which wins there. The variance
    is taken from centred values (no E[x^2] - E[x]^2 cancellation); the sums are BLAS dot products,
    accurate to ~1e-6 relative on a million values, where a plain fp32 reduction drifts to ~1e-5.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = Parameter(Tensor(np.ones(num_channels, np.float32)))
            self.bias = Parameter(Tensor(np.zeros(num_channels, np.float32)))
        self.unit = Tensor(np.ones(num_channels, np.float32))
        self.zero = Tensor(np.zeros(num_channels, np.float32))
        self.normalize = ops.BatchNorm(is_training=False, epsilon=eps)  # (x - mean) / sqrt(var + eps) * w + b

    # below this many values the one fused kernel beats the ~15 operators of the BatchNorm route (measured
    # crossover, 2 cores); above it the BatchNorm route is 2-4x faster. Eagerly the crossover is near 2^19;
    # in a compiled graph (``base.compile_network``) near 2^15, where the route is 1.5-3x the fused kernel
    fused_below = 2 ** 19
    fused_below_compiled = 2 ** 15
    # from this many values the sum of squares is a batched dot product (memory: no tensor of squares); below it
    # the squares' matrix-vector product is faster (1.3x at 2 x 32 channels x 96x144, eager and compiled)
    squares_by_dot_from = 2 ** 24

    def construct(self, x):
        if x.size < self.fused_below:
            weight, bias = (self.weight, self.bias) if self.affine else (None, None)
            return mint.nn.functional.group_norm(x, self.num_groups, weight, bias, self.eps)
        b, c = x.shape[0], x.shape[1]
        g = self.num_groups
        per = c // g
        rows = x.reshape(1, b * c, -1, 1)  # every (sample, channel) a BatchNorm channel
        unit, zero = ops.tile(self.unit, (b,)), ops.tile(self.zero, (b,))
        mean, var = self._statistics(x, rows, unit, zero, g, per)
        weight = ops.tile(self.weight, (b,)) if self.affine else unit
        bias = ops.tile(self.bias, (b,)) if self.affine else zero
        out = self.normalize(rows, weight, bias, _per_channel(mean, b, g, per), _per_channel(var, b, g, per))[0]
        return out.reshape(x.shape)

    def _statistics(self, x, rows, unit, zero, g: int, per: int):
        """Group means and variances, (b * g, 1) each; from ``squares_by_dot_from`` values the variance takes no
        input-sized tensor of squares (a GroupNorm over 2 x 128 channels at 576x1024 grew 1.8 GB, so 1.2 GB)."""
        b, m = x.shape[0], rows.shape[2] * per
        average = (ops.ones((m, 1), x.dtype) / m).astype(x.dtype)
        mean = ops.matmul(x.reshape(b * g, m), average).reshape(b * g, 1)
        # centred once (divided by sqrt(1 + eps), undone below) to measure the variance and the residual mean
        centred = self.normalize(rows, unit, zero, _per_channel(mean, b, g, per), unit)[0].reshape(b * g, m)
        shift = ops.matmul(centred, average)
        if x.size < self.squares_by_dot_from:
            squares = ops.matmul(centred * centred, average)
        else:  # each group's row dotted with itself: no tensor of squares (slower below this size)
            flat = centred.reshape(b * g, 1, m)
            squares = _batch_matmul_tb(flat, flat).reshape(b * g, 1) / m
        var = (squares - shift * shift) * (1.0 + self.eps)
        return mean + shift * ((1.0 + self.eps) ** 0.5), var


def _per_channel(stat, b: int, g: int, per: int):
    """(b * g, 1) group statistics -> (b * g * per,) one per (sample, channel)."""
    return ops.broadcast_to(stat, (b * g, per)).reshape(b * g * per)


_matmul_ta = ops.MatMul(transpose_a=True)
_matmul_tb = ops.MatMul(transpose_b=True)
_batch_matmul_ta = ops.BatchMatMul(transpose_a=True)
_batch_matmul_tb = ops.BatchMatMul(transpose_b=True)


def _identity(b: int, c: int, dtype):
    """The (c, c) identity, or b copies of it (batched products on CPU do not broadcast); small ones are
    made once (two eager operators saved per layout change), large ones per call (no memory held)."""
    if b * c * c <= 2 ** 18:
        return _small_identity(b, c, dtype)
    eye = ops.eye(c, c, dtype)
    return eye if b == 1 else ops.tile(eye.expand_dims(0), (b, 1, 1))


@functools.lru_cache(maxsize=128)
def _small_identity(b: int, c: int, dtype):
    eye = np.eye(c, dtype=np.float32)
    return Tensor(eye if b == 1 else np.tile(eye[None], (b, 1, 1)), dtype)


# layout changes with at least this many channels gather single values (2.2 ns each) rather than multiply by
# the identity (2C flops per value: 1.2 ns at 128 channels, 4.9 ns at 512; measured, 2 cores)
GATHER_LAYOUT_CHANNELS = 384


def channels_last_rows(x):
    """(B, C, *S) -> (B * prod(S), C), contiguous.

    Computed as x^T @ I: a product with the identity is exact (every output is one input times 1 plus
    zeros) and runs 4-8x faster than MindSpore's CPU transpose, whose strided copy moves ~1 GB/s. Its cost
    grows with C, so from ``GATHER_LAYOUT_CHANNELS`` channels on, one gather of single values is used instead.
    """
    b, c = x.shape[0], x.shape[1]
    if c >= GATHER_LAYOUT_CHANNELS:
        return swap_middle_axes(x, b, c, x.size // (b * c)).reshape(-1, c)
    if b == 1:
        return _matmul_ta(x.reshape(c, -1), _identity(1, c, x.dtype))
    return _batch_matmul_ta(x.reshape(b, c, -1), _identity(b, c, x.dtype)).reshape(-1, c)


def _rows_and_zero(x):
    """``channels_last_rows(x)`` followed by one zero row: the row every padding position gathers."""
    return ops.cat([channels_last_rows(x), ops.zeros((1, x.shape[1]), x.dtype)], 0)


def channels_first(rows, b: int, spatial: tuple):
    """(B * prod(spatial), C) rows -> (B, C, *spatial), contiguous; the inverse of ``channels_last_rows``."""
    c = rows.shape[-1]
    if c >= GATHER_LAYOUT_CHANNELS:
        return swap_middle_axes(rows, b, rows.size // (b * c), c).reshape((b, c) + tuple(spatial))
    if b == 1:
        out = _matmul_tb(_identity(1, c, rows.dtype), rows)
    else:
        out = _batch_matmul_tb(_identity(b, c, rows.dtype), rows.reshape(b, -1, c))
    return out.reshape((b, c) + tuple(spatial))


@functools.lru_cache(maxsize=256)
def _permute_plan(shape: tuple, perm: tuple) -> tuple:
    """(source row of every output row, row length): trailing axes that ``perm`` leaves in place stay
    together as contiguous rows; the other axes are permuted by the index."""
    kept = 0
    while kept < len(shape) and perm[len(shape) - 1 - kept] == len(shape) - 1 - kept:
        kept += 1
    lead = len(shape) - kept
    row = int(np.prod(shape[lead:]))
    index = np.arange(int(np.prod(shape[:lead]))).reshape(shape[:lead]).transpose(perm[:lead]).reshape(-1)
    return Tensor(index.astype(np.int32)), row


def permute(x, perm: tuple):
    """``x.transpose(perm)``, contiguous, as one gather of rows (MindSpore's CPU transpose moves ~1 GB/s; a
    gather of rows of H*W values runs ~10x faster, of single values ~2x)."""
    perm = tuple(perm)
    index, row = _permute_plan(tuple(x.shape), perm)
    return ops.gather(x.reshape(-1, row), index, 0).reshape(tuple(x.shape[p] for p in perm))


def swap_middle_axes(x, lead: int, a: int, b: int):
    """``x`` viewed as (lead, a, b, rest) -> (lead, b, a, rest), as one gather of contiguous rows of ``rest``
    values (10x MindSpore's CPU transpose, e.g. frames <-> channels of a video: 3 ms instead of 35 ms)."""
    return permute(x.reshape(lead, a, b, -1), (0, 2, 1, 3))


def add_channel_bias(x, bias):
    """x (B, C, *S) + bias (B, C) broadcast over S, by ``bias_add`` on (1, B * C, prod(S)) (5x the
    broadcasting add on MindSpore's CPU backend)."""
    return ops.bias_add(x.reshape(1, bias.size, -1), bias.reshape(-1)).reshape(x.shape)


def _padded_grid(b: int, spatial: tuple, padding: tuple) -> tuple:
    """(grid, inputs): for every position of the zero-padded input, (b, *padded), its row among the ``inputs``
    channels-last rows of ``_rows_and_zero``; padding positions hold ``inputs``, the appended zero row."""
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, padding))
    inputs = b * int(np.prod(spatial))
    grid = np.full((b,) + padded, inputs, np.int64)
    inner = (slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in zip(padding, spatial))
    grid[inner] = np.arange(inputs).reshape((b,) + tuple(spatial))
    return grid, inputs


def strided_size(spatial: tuple, kernel: tuple, padding: tuple, stride: tuple) -> tuple:
    """A convolution's output size (torch semantics)."""
    return tuple((n + lo + hi - k) // st + 1 for n, k, (lo, hi), st in zip(spatial, kernel, padding, stride))


@functools.lru_cache(maxsize=512)
def _conv_plan(b: int, spatial: tuple, kernel: tuple, padding: tuple, stride: tuple):
    """Host-side tables for one convolution geometry (see ``conv_shifted_matmul``): which input row
    fills each row of the padded channels-last matrix, the row offset of every kernel tap, how many
    rows to compute, which computed rows are outputs, and the output size."""
    nd = len(spatial)
    grid, inputs = _padded_grid(b, spatial, padding)
    padded = grid.shape[1:]
    full = tuple(padded[d] - kernel[d] + 1 for d in range(nd))
    out_size = tuple((full[d] - 1) // stride[d] + 1 for d in range(nd))
    pitch = [1] * nd  # row distance between neighbours along each spatial dim
    for d in range(nd - 2, -1, -1):
        pitch[d] = pitch[d + 1] * padded[d + 1]
    per_sample = pitch[0] * padded[0]
    offsets = []
    for tap in np.ndindex(*kernel):
        offsets.append(int(sum(t * p for t, p in zip(tap, pitch))))
    # with one sample, rows past the last full slab along the first axis are never outputs
    computed = full[0] * pitch[0] if b == 1 else b * per_sample
    source = grid.reshape(-1)
    short = computed + offsets[-1] - source.size  # the farthest tap's slice must fit
    if short > 0:
        source = np.concatenate([source, np.full(short, inputs, np.int64)])
    axes = [np.arange(out_size[d]) * stride[d] * pitch[d] for d in range(nd)]
    keep = np.arange(b)[:, None] * per_sample + sum(np.ix_(*axes)).reshape(1, -1)
    return (Tensor(source.astype(np.int32)), tuple(offsets), computed, Tensor(keep.reshape(-1).astype(np.int32)),
            out_size)


# conv_temporal's gathered taps stay under this many bytes: a larger clip is convolved in bands of image rows (a real
# SVD decode chunk, 8 frames x 128 channels at 576x1024, is 2.4 GB; its three taps at once would be 7.2 GB more)
TEMPORAL_PIECE_BYTES = 2 ** 28


@functools.lru_cache(maxsize=256)
def _temporal_plan(b: int, c: int, f: int, kt: int, time_pad: tuple, bands: int = 1, band: int = 0) -> Tensor:
    """For ``conv_temporal``: the input row behind every (tap, channel, sample, output frame), tap-major, where the
    input is seen as rows of one of ``bands`` equal column ranges of a (sample, channel, frame) -- band ``band``
    here; padding frames read the zero row at the end (row b * c * f * bands)."""
    lo, hi = time_pad
    f_out = f + lo + hi - kt + 1
    frame = np.arange(f_out)[None, :] + np.arange(kt)[:, None] - lo                       # (kt, f_out)
    rows = (np.arange(b)[None, None, :, None] * c + np.arange(c)[None, :, None, None]) * f \
        + frame[:, None, None, :]                                                         # (kt, c, b, f_out)
    inside = (frame >= 0) & (frame < f)
    rows = np.where(inside[:, None, None, :], rows * bands + band, b * c * f * bands)
    return Tensor(rows.reshape(-1).astype(np.int32))


@functools.lru_cache(maxsize=256)  # also keeps it host-side Python under mindspore.jit (no unrolled loop)
def temporal_bands(height: int, width: int, per_pixel_bytes: int, budget: int) -> int:
    """Into how many bands of whole image rows ``conv_temporal`` cuts a frame: the fewest (a divisor of ``height``,
    so the bands are equal) whose pixels' taps stay within ``budget`` bytes; one row per band at the most."""
    for bands in range(1, height + 1):
        if height % bands == 0 and (height // bands) * width * per_pixel_bytes <= budget:
            return bands
    return height


def conv_temporal(x, weight, bias, time_pad: tuple):
    """A convolution over time only, weight (O, C, kt, 1, 1), stride 1, ``time_pad`` zero frames before/after,
    as one product: every (channel, frame) of the input is a contiguous row of H*W values, so one gather of rows
    lays the taps out as (kt * C, B * F_out * H*W) -- tap and channel on the rows -- and the kernel, as
    (O, kt * C), multiplies it once. No slicing and no copies of the kernel (a compiled graph copies a frame slice
    slowly: MindSpore's strided slice ran ~31 ms per tap at SVD's widths), channels-first throughout.
    Taps over ``TEMPORAL_PIECE_BYTES`` go band by band of image rows: the input is then seen as rows of one band
    each (still contiguous, still no slicing), and every band is one gather and one product."""
    b, c, f, h, w = x.shape
    o, kt = weight.shape[0], weight.shape[2]
    f_out = f + time_pad[0] + time_pad[1] - kt + 1
    bands = temporal_bands(h, w, kt * c * b * f_out * x.itemsize, TEMPORAL_PIECE_BYTES)
    cols = h * w // bands
    rows = ops.cat([x.reshape(b * c * f * bands, cols), ops.zeros((1, cols), x.dtype)], 0)
    kernel = permute(weight.reshape(o, c, kt), (0, 2, 1)).reshape(o, kt * c)  # (O, [tap, channel])
    outs = []
    for band in range(bands):
        plan = after(_temporal_plan(b, c, f, kt, tuple(time_pad), bands, band), outs[-1] if outs else None)
        taps = ops.gather(rows, plan, 0).reshape(kt * c, -1)
        outs.append(ops.matmul(kernel, taps).reshape(o, b * f_out, cols))   # (O, B * F_out, band's H*W)
    out = outs[0] if bands == 1 else ops.cat(outs, 2)
    out = out.reshape(o, -1)                                                  # (O, B * F_out * H*W)
    if b > 1:
        out = swap_middle_axes(out, 1, o, b)                                  # (B, O, F_out * H*W)
    out = out.reshape(b, o, -1)
    if bias is not None:
        out = ops.bias_add(out, bias)
    return out.reshape(b, o, f_out, h, w)


# a strided convolution's gathered patches above this many bytes fall back to shifted row products
PATCHES_MAX_BYTES = 2 ** 28


@functools.lru_cache(maxsize=512)
def _patch_plan(b: int, spatial: tuple, kernel: tuple, padding: tuple, stride: tuple):
    """For every output position (in (sample, *position) order) the input row under each kernel tap (in
    (*tap) order), as one flat index into the channels-last rows plus a zero row; and the output size."""
    grid, _ = _padded_grid(b, spatial, padding)
    out_size = strided_size(spatial, kernel, padding, stride)
    starts = np.ix_(*[np.arange(n) * st for n, st in zip(out_size, stride)])
    taps = [grid[(slice(None),) + tuple(s + t for s, t in zip(starts, tap))].reshape(b, -1)
            for tap in np.ndindex(*kernel)]
    return Tensor(np.stack(taps, -1).reshape(-1).astype(np.int32)), out_size


def conv_gathered_patches(x, weight, bias, padding: tuple, stride: tuple):
    """A convolution as one product of gathered patches: every output position's receptive field is
    gathered (channels-last rows, a zero row for padding) into a (positions, taps * C) matrix, then
    multiplied by the kernels as (taps * C, O). For strided convolutions (patch embeddings, 2x downsamplers)
    this computes only the outputs, where shifted row products compute every input position and drop
    most (a 14x14 stride-14 patch embedding: 196 products over all 50k pixels instead of one product
    over 256 patches)."""
    nd = len(stride)
    b, o = x.shape[0], weight.shape[0]
    kernel = tuple(weight.shape[2:])
    index, out_size = _patch_plan(b, tuple(x.shape[2:]), kernel, tuple(padding), tuple(stride))
    cols = ops.gather(_rows_and_zero(x), index, 0).reshape(b * int(np.prod(out_size)), -1)  # (positions, taps*C)
    kernels = weight.transpose((0,) + tuple(range(2, nd + 2)) + (1,)).reshape(o, -1)  # (O, taps * C)
    out = _matmul_tb(cols, kernels)
    if bias is not None:
        out = ops.bias_add(out, bias)
    return channels_first(out, b, out_size)


# Winograd F(2x2, 3x3) (Lavin & Gray, https://arxiv.org/abs/1509.09308): a 2x2 output tile of a 3x3 conv
# from a 4x4 input tile with 16 products instead of 36. In Kronecker form on row-major flattened tiles:
# input transform kron(Bt, Bt) (16x16), kernel transform kron(G, G) (16x9), output transform kron(At, At) (4x16).
_WINO_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
_WINO_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64)
_WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
_WINO_IN = Tensor(np.kron(_WINO_BT, _WINO_BT).astype(np.float32))
_WINO_OUT = Tensor(np.kron(_WINO_AT, _WINO_AT).astype(np.float32))


@functools.lru_cache(maxsize=64)
def _winograd_kernel_transform(kt: int) -> Tensor:
    """(kt * 16, kt * 9): every temporal tap's 3x3 kernel to its 16 Winograd-domain values."""
    return Tensor(np.kron(np.eye(kt), np.kron(_WINO_G, _WINO_G)).astype(np.float32))


# Winograd-domain temporaries of one piece of a convolution stay under this many bytes: a large input
# (a full-resolution video frame has ~10^8 values at the decoder's top level) is convolved piece by piece --
# a few frames, or a band of rows of one frame -- so peak memory does not grow with the video.
WINOGRAD_PIECE_BYTES = 2 ** 28
# With temporal taps, a piece whose per-tap tile copies stay under this size runs as a few batched products
# (fewer operators: faster for small inputs, and MindSpore 2.10 keeps ~1 KB per eager matmul call); larger
# pieces run one product per (tile element, tap) on slices, which copies nothing.
WINOGRAD_BATCHED_BYTES = 2 ** 23
# With temporal taps, bands of rows across all frames (no input tile transformed twice) while a band has this many
# tiles: thinner bands' products run slower (a (1728, 256) x (256, 128) product at 107 GFLOP/s, (17280, 256) at 258).
WINOGRAD_BAND_MIN_TILES = 2048


@functools.lru_cache(maxsize=1024)
def _winograd_plan(t: int, h: int, w: int, kt: int, time_pad: tuple, frames: tuple, rows: tuple):
    """Host-side tables for one piece of ``conv3x3_winograd``: output frames ``frames`` = (f0, f1) and
    output rows ``rows`` = (y0, y1) of a one-sample (C, T, H, W) input. Returns the input row (into the
    channels-last rows of the whole input, plus a zero row at the end) behind every element of every 4x4
    tile (tile-element major), the tiles of one frame, the rows computed per tile element, and the result
    row of every output position of the piece, in (frame, row, column) order."""
    (f0, f1), (y0, y1) = frames, rows
    th, tw = (y1 - y0 + 1) // 2, (w + 1) // 2
    tiles = th * tw
    source_frame = np.arange(f0, f1 + kt - 1) - time_pad[0]  # padded frame -> input frame
    source_frame = np.where((source_frame >= 0) & (source_frame < t), source_frame, -1)[None, None, :, None, None]
    ys = (y0 + 2 * np.arange(th)[None, :] - 1 + np.arange(4)[:, None])[:, None, None, :, None]  # (4, 1, 1, th, 1)
    xs = (2 * np.arange(tw)[None, :] - 1 + np.arange(4)[:, None])[None, :, None, None, :]       # (1, 4, 1, 1, tw)
    inside = (source_frame >= 0) & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    source = np.where(inside, (source_frame * h + ys) * w + xs, t * h * w).reshape(-1)
    computed = (f1 - f0) * tiles
    yy, xx = np.arange(y1 - y0)[:, None], np.arange(w)[None, :]
    keep = ((yy % 2) * 2 + xx % 2)[None] * computed + (np.arange(f1 - f0) * tiles)[:, None, None] \
        + ((yy // 2) * tw + xx // 2)[None]
    return Tensor(source.astype(np.int32)), tiles, computed, Tensor(keep.reshape(-1).astype(np.int32))


@functools.lru_cache(maxsize=1024)  # also keeps it host-side Python under mindspore.jit
def _winograd_pieces(t_out: int, h: int, w: int, width: int, budget: int, kt: int = 1,
                     min_tiles: int = WINOGRAD_BAND_MIN_TILES) -> tuple:
    """(frames, rows) ranges covering the output, each within the byte budget (four live temporaries of 16
    tile elements per 2x2 output pixels, ``width`` channels, float32): whole frames while a frame fits, else
    bands of rows. With ``kt`` > 1 temporal taps a piece of n output frames transforms n + kt - 1 input frames,
    so when not all frames fit one piece, bands of rows across all frames come first (every input tile is
    transformed once, not up to kt times), while a band still has ``min_tiles`` tiles (products that large
    run near full speed)."""
    tw = (w + 1) // 2
    per_row_pair = 4 * 16 * tw * width * 4
    per_frame = per_row_pair * ((h + 1) // 2)
    n = budget // per_frame  # whole frames per piece
    pairs = budget // (per_row_pair * (t_out + kt - 1))  # tile rows of a band across all frames
    if kt > 1 and n < t_out and pairs >= 1 and pairs * tw * t_out >= min_tiles:
        return tuple(((0, t_out), (y, min(y + 2 * pairs, h))) for y in range(0, h, 2 * pairs))
    if n >= 1:
        return tuple(((f, min(f + n, t_out)), (0, h)) for f in range(0, t_out, n))
    band = 2 * max(1, budget // per_row_pair)  # even, so every band starts a tile row
    return tuple(((f, f + 1), (y, min(y + band, h))) for f in range(t_out) for y in range(0, h, band))


# A compiled graph unrolls every piece of every convolution. MindSpore 2.10 refuses a graph past its call-depth
# limit (an SD VAE decode whose top-level convolutions ran in ~340 pieces each failed to compile; at 24 pieces
# each it compiled in ~12 s and ran 1.4x faster than eagerly), so networks whose largest convolution needs more
# pieces than this run eagerly (see ``fits_compiled_graph``).
COMPILED_PIECES_MAX = 24


def fits_compiled_graph(frames: int, height: int, width: int, channels: int) -> bool:
    """Whether a network whose largest 3x3 convolution runs over ``frames`` images of ``height`` x ``width`` with
    ``channels`` channels compiles as one graph: its convolutions run in at most ``COMPILED_PIECES_MAX`` pieces."""
    return len(_winograd_pieces(frames, height, width, channels, WINOGRAD_PIECE_BYTES)) <= COMPILED_PIECES_MAX


@functools.lru_cache(maxsize=1024)
def _row_range(start: int, count: int) -> Tensor:
    return Tensor(np.arange(start, start + count, dtype=np.int32))


def conv3x3_winograd(x, weight, bias, time_pad: tuple = (0, 0)):
    """A 3x3 convolution over H, W (padding 1, stride 1), optionally with ``kt`` temporal taps (no
    temporal stride; ``time_pad`` zero frames before/after), by Winograd F(2x2, 3x3).

    x: (B, C, T, H, W) with weight (O, C, kt, 3, 3), or (B, C, H, W) with weight (O, C, 3, 3) -- the
    batch of a 2-D conv is treated as frames of one sample with a one-frame kernel.
    Tiles are gathered channels-last and transformed by one small matrix product; then every (temporal
    tap, tile element) is a (tiles, C) @ (C, O) product -- 2.25x fewer multiplications than the direct
    form -- and one more product maps tiles back. Large inputs go piece by piece (WINOGRAD_PIECE_BYTES).
    Agrees with the direct convolution to ~1e-6 relative.
    """
    planar = x.ndim == 4
    o, kt = weight.shape[0], 1 if planar else weight.shape[2]
    c = x.shape[1]
    kernels = _matmul_tb(_winograd_kernel_transform(kt), weight.reshape(o * c, kt * 9)).reshape(kt, 16, o, c)
    if planar:  # the batch is the frames of one sample
        return _winograd_sample(x, kernels, bias, (0, 0))
    # samples one at a time: temporal taps must not cross samples
    outs = [_winograd_sample(x[i:i + 1], kernels, bias, tuple(time_pad)) for i in range(x.shape[0])]
    return outs[0] if len(outs) == 1 else ops.cat(outs, 0)


def _winograd_sample(x, kernels, bias, time_pad: tuple):
    """``conv3x3_winograd`` of one sample (C, T, H, W) as (1, C, T, H, W), or of a 2-D batch (T, C, H, W),
    with the kernels already in the Winograd domain, (kt, 16, O, C)."""
    planar = x.ndim == 4
    t, h, w = (x.shape[0], x.shape[2], x.shape[3]) if planar else x.shape[2:]
    t_out = t + time_pad[0] + time_pad[1] - kernels.shape[0] + 1
    out = _winograd_rows(x, kernels, bias, time_pad, t, t_out, h, w)
    return channels_first(out, t, (h, w)) if planar else channels_first(out, 1, (t_out, h, w))


def _winograd_rows(x, kernels, bias, time_pad: tuple, t: int, t_out: int, h: int, w: int):
    """``_winograd_sample``'s output as channels-last rows (T_out * H * W, O), bias added piece by piece. Its own
    function so that eagerly the input's rows and the pieces are freed before the output is laid out channels
    first (a 128 -> 128 convolution over 2 x 576x1024 grew 3.35 GB, PyTorch's 1.16 GB)."""
    kt, _, o, c = kernels.shape
    flat = _rows_and_zero(x)
    ranges = _winograd_pieces(t_out, h, w, max(c, o), WINOGRAD_PIECE_BYTES, kt, WINOGRAD_BAND_MIN_TILES)
    pieces = []
    for frames, rows in ranges:
        source, tiles, computed, keep = _winograd_plan(t, h, w, kt, time_pad, frames, rows)
        source = after(source, pieces[-1] if pieces else None)
        tiles_in = ops.matmul(_WINO_IN, ops.gather(flat, source, 0).reshape(16, -1)).reshape(16, -1, c)
        # temporal tap dt reads the tiles dt frames later, a row range of every tile element
        if kt == 1:  # all 16 tile elements in one batched product
            products = _batch_matmul_tb(tiles_in, kernels.reshape(16, o, c))
        elif 64 * computed * c <= WINOGRAD_BATCHED_BYTES:
            products = None  # small: the row ranges copied out by gathers, one batched product per tap
            for dt in range(kt):
                y = _batch_matmul_tb(ops.gather(tiles_in, _row_range(dt * tiles, computed), 1), kernels[dt])
                products = y if products is None else products + y
        else:  # large: no copies, one product per (tile element, tap) on contiguous row slices
            per_element = []
            for e in range(16):
                acc = None
                for dt in range(kt):
                    y = _matmul_tb(tiles_in[e, dt * tiles:dt * tiles + computed], kernels[dt, e])
                    acc = y if acc is None else acc + y
                per_element.append(acc)
            products = ops.stack(per_element, 0)
        out = ops.gather(ops.matmul(_WINO_OUT, products.reshape(16, -1)).reshape(-1, o), keep, 0)
        if bias is not None:
            out = ops.bias_add(out, bias)
        pieces.append(out.reshape(frames[1] - frames[0], -1, o))
    return _join_pieces(pieces, ranges).reshape(-1, o)


def _join_pieces(pieces: list, ranges: tuple):
    """Pieces of (frames, rows * width, O) in ``ranges`` order -> (frames, height * width, O): the row bands of
    one frame range side by side, then the frame ranges one after another."""
    groups, start = [], 0
    for i in range(1, len(ranges) + 1):
        if i == len(ranges) or ranges[i][0] != ranges[start][0]:
            band = pieces[start:i]
            groups.append(band[0] if len(band) == 1 else ops.cat(band, 1))
            start = i
    return groups[0] if len(groups) == 1 else ops.cat(groups, 0)


def _winograd_applies(kernel: tuple, padding: tuple, stride: tuple) -> bool:
    return (tuple(kernel[-2:]) == (3, 3) and all(s == 1 for s in stride)
            and tuple(padding[-2:]) == ((1, 1), (1, 1)))


def conv_pointwise(x, weight, bias):
    """A 1x1 convolution (B, C, *S) -> (B, O, *S), channels-first. One sample: one product. Several: a batched
    product with the kernel copied per sample (CPU batched products do not broadcast), unless the copies outweigh
    moving the activations -- O * C > L * (C + O) for L positions per sample (deep levels: 1280 x 2560 kernels over
    8x8 positions) -- where the samples go side by side as columns of one product instead."""
    b, c, o = x.shape[0], x.shape[1], weight.shape[0]
    spatial = tuple(x.shape[2:])
    positions = x.size // (b * c)
    kernel = weight.reshape(o, c)
    if b == 1:
        out = ops.matmul(kernel, x.reshape(c, positions))
    elif o * c > positions * (c + o):
        out = ops.matmul(kernel, swap_middle_axes(x, 1, b, c).reshape(c, b * positions))
        out = swap_middle_axes(out, 1, o, b)
    else:
        out = ops.matmul(kernel.reshape(1, o, c), x.reshape(b, c, positions))
    out = out.reshape(b, o, positions)
    if bias is not None:
        out = ops.bias_add(out, bias)
    return out.reshape((b, o) + spatial)


def conv_shifted_matmul(x, weight, bias, padding: tuple, stride: tuple):
    """An N-d convolution (torch semantics, groups=1) as a sum of shifted matrix products.

    MindSpore 2.10's CPU convolution kernels are 10-300x slower than PyTorch's (its oneDNN call falls
    to a reference implementation on channels-first data; a 3x3 conv over 64 channels at 62x92: 330 ms
    vs 1-4 ms), while its matmul runs at the machine's peak. So: lay the input out channels-last with
    every position of the whole batch a row, padded by gathering rows (a zero row stands for padding);
    then a kernel tap at offset (dt, dh, dw) reads the rows shifted by dt*Hp*Wp + dh*Wp + dw -- a
    *contiguous* row slice -- and the output is the sum over taps of slice @ W_tap. Rows whose window
    runs past the edge are computed and dropped (a gather keeps the outputs, at the strides), then the
    result goes back channels-first. Same numbers as torch to float32 rounding (summation order).

    x: (B, C, *S); weight: (O, C, *K); padding: per spatial dim (lo, hi); stride: per spatial dim.
    """
    weight = after(weight, x)  # its rearranged copies made when x is there, not all at a compiled graph's start
    nd = len(stride)
    kernel = tuple(weight.shape[2:])
    b, c = x.shape[0], x.shape[1]
    o = weight.shape[0]
    spatial = tuple(x.shape[2:])
    pointwise = all(k == 1 for k in kernel) and all(s == 1 for s in stride) and \
        all(lo == 0 and hi == 0 for lo, hi in padding)
    if pointwise:
        return conv_pointwise(x, weight, bias)
    if nd == 3 and kernel[1:] == (1, 1) and kernel[0] > 1 and all(st == 1 for st in stride) and \
            all(p == (0, 0) for p in padding[1:]):
        return conv_temporal(x, weight, bias, tuple(padding[0]))
    # strided (only the outputs computed) or few inputs (a conv_in: the patches no wider than the outputs): one
    # product of gathered patches, while they fit
    taps = int(np.prod(kernel))
    if any(st > 1 for st in stride) or taps * c <= o:
        positions = b * int(np.prod(strided_size(spatial, kernel, padding, stride)))
        if positions * taps * c * 4 <= PATCHES_MAX_BYTES:
            return conv_gathered_patches(x, weight, bias, padding, stride)
    if _winograd_applies(kernel, padding, stride) and nd in (2, 3):
        return conv3x3_winograd(x, weight, bias, tuple(padding[0]) if nd == 3 else (0, 0))
    source, offsets, n, keep, out_size = _conv_plan(b, spatial, kernel, tuple(padding), tuple(stride))
    xf = ops.gather(_rows_and_zero(x), source, 0)  # padded, channels-last, with a zero tail for the farthest tap
    wk = weight.transpose(tuple(range(2, nd + 2)) + (1, 0)).reshape(len(offsets), c, o)
    out = None
    for t, offset in enumerate(offsets):
        y = ops.matmul(xf[offset:offset + n], wk[t])
        out = y if out is None else out + y
    out = ops.gather(out, keep, 0)
    if bias is not None:
        out = ops.bias_add(out, bias)
    return channels_first(out, b, out_size)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output position for torch's ``interpolate(mode="nearest")``:
    ``min(floor(i * in/out), in - 1)`` with the scale in float32, as torch computes it."""
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


@functools.lru_cache(maxsize=256)
def _nearest_rows(b: int, in_size: tuple, out_size: tuple) -> Tensor:
    """For every output position of every sample, the channels-last input row it copies."""
    sources = np.ix_(np.arange(b), *[nearest_indices(m, n) for m, n in zip(in_size, out_size)])
    pitch = np.cumprod((1,) + tuple(reversed(in_size)))[::-1]  # rows per step along (batch, *in_size)
    return Tensor(sum(s * int(p) for s, p in zip(sources, pitch)).reshape(-1).astype(np.int32))


def resize_nearest(x, size: tuple):
    """torch ``interpolate(mode="nearest")`` of every axis after the channels of (B, C, *S) to ``size``,
    as one gather of channels-last rows (15x faster than repeating along each axis on MindSpore's CPU)."""
    spatial, size = tuple(x.shape[2:]), tuple(size)
    if spatial == size:
        return x
    b = x.shape[0]
    return channels_first(ops.gather(channels_last_rows(x), _nearest_rows(b, spatial, size), 0), b, size)


def _pairs(padding, nd: int) -> tuple:
    if isinstance(padding, int):
        return ((padding, padding),) * nd
    if len(padding) == nd:
        return tuple((p, p) for p in padding)
    return tuple((padding[2 * d], padding[2 * d + 1]) for d in range(nd))


def _tuple(v, nd: int) -> tuple:
    return (v,) * nd if isinstance(v, int) else tuple(v)


class _MatmulConvolution:
    """What ``Conv2d`` and ``Conv3d`` share: torch's padding argument kept as (lo, hi) pairs per spatial dim, and
    the forward by ``conv_shifted_matmul`` (MindSpore's CPU conv kernels are far slower than its matmul). The
    MindSpore base class makes the ``weight``/``bias`` parameters."""

    def _padded_init(self, base, nd, in_channels, out_channels, kernel_size, stride, padding, bias):
        self.pad_pairs = _pairs(padding, nd)
        self.stride_tuple = _tuple(stride, nd)
        flat = tuple(p for pair in self.pad_pairs for p in pair)
        base.__init__(self, in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad", padding=flat,
                      has_bias=bias)

    def construct(self, x):
        return conv_shifted_matmul(x, self.weight, self.bias if self.has_bias else None, self.pad_pairs,
                                   self.stride_tuple)


class Conv2d(_MatmulConvolution, nn.Conv2d):
    """torch.nn.Conv2d(in, out, k, stride, padding) with bias; weight (out, in, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        self._padded_init(nn.Conv2d, 2, in_channels, out_channels, kernel_size, stride, padding, bias)

    def per_frame(self, x):
        """This 2-D conv on every frame of (B, C, F, H, W): a 3-D conv with a one-frame kernel, so the
        frames need not be moved into the batch and back."""
        o, c, kh, kw = self.weight.shape
        return conv_shifted_matmul(x, self.weight.reshape(o, c, 1, kh, kw), self.bias if self.has_bias else None,
                                   ((0, 0),) + self.pad_pairs, (1,) + self.stride_tuple)


class Conv3d(_MatmulConvolution, nn.Conv3d):
    """torch.nn.Conv3d(in, out, k, stride, padding) with bias; weight (out, in, kt, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        self._padded_init(nn.Conv3d, 3, in_channels, out_channels, kernel_size, stride, padding, bias)


def silu(x):
    return mint.nn.functional.silu(x)


def gelu(x, approximate: str = "none"):
    """GELU; the tanh approximation in its equivalent sigmoid form 0.5x(1 + tanh(u)) = x sigmoid(2u), which
    runs ~7x faster than ``ops.gelu(approximate="tanh")`` on MindSpore's CPU backend (same values to 5e-7); the
    exact form as ``ops.gelu`` computes it, with x / sqrt(2) as a product (MindSpore's CPU division of a large
    tensor by a scalar took 4.6 ms per 10^7 values, a third of the erf itself)."""
    if approximate == "tanh":
        return x * ops.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))
    if approximate != "none":
        raise ValueError(f"gelu approximate={approximate!r}: expected 'none' or 'tanh'")
    return x * (ops.erf(x * 0.7071067811865476) + 1.0) * 0.5


# Attention's scores, (B, H, Sq, Sk) floats, over this many bytes are computed a band of queries at a time: the
# matmul-softmax-matmul route holds the scores and their softmax at once, and at real sizes whole they do not fit
# (SVD at 576x1024, CFG batch 2 x 14 frames x 5 heads x 9216^2 tokens: 47 GB, twice) ...
ATTENTION_SCORES_BYTES = 2 ** 28
# ... and a feed-forward's hidden activation over this many bytes a band of rows (tokens) at a time: its
# projection, gate halves and activation's temporaries live at once (SVD's first level at 576x1024 x 14 frames, CFG
# batch: 258k tokens x 2560 = 2.6 GB, the projection alone) ...
FEEDFORWARD_HIDDEN_BYTES = 2 ** 28
# ... in at most this many bands: a compiled graph unrolls them, MindSpore refuses a graph past its call-depth
# limit (a lone attention of 100 bands already), and compiling grows faster than the band count (measured: 16 bands
# 1.1 s, 32 2.2 s, 64 4.8 s; 178 22 s with the limit raised). Past 32 x the budget the bands grow instead.
MAX_BANDS = 32


@functools.lru_cache(maxsize=256)  # host-side Python under mindspore.jit
def equal_bands(count: int, item_bytes: int, budget: int, max_bands: int = MAX_BANDS) -> tuple:
    """The sizes of the fewest equal-as-can-be bands of ``count`` items of ``item_bytes`` each -- ``max_bands``
    at the most -- that stay within ``budget`` bytes; one item per band at the most."""
    per_band = max(1, budget // item_bytes)
    n = min(-(-count // per_band), max_bands)
    return tuple(count // n + (1 if i < count % n else 0) for i in range(n))


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale + mask) v on (B, H, S, D); fp32 matmul-softmax-matmul (no fused kernel on CPU).

    ``mask`` is additive (broadcastable to (B, H, Sq, Sk)) or None. Scores over ``ATTENTION_SCORES_BYTES`` are
    computed in bands of queries, one after the other (softmax is over keys, so a band is exact on its own):
    peak memory stays at a few bands' scores (``MAX_BANDS`` bands at the most).
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    q = q * scale
    b, h, sq, _ = q.shape
    kt = k.swapaxes(-1, -2)
    bands = equal_bands(sq, b * h * k.shape[-2] * q.itemsize, ATTENTION_SCORES_BYTES, MAX_BANDS)
    if len(bands) == 1:
        return _attend(q, kt, v, mask)
    qs = ops.split(q, bands, 2)
    masks = ops.split(mask, bands, -2) if mask is not None and mask.shape[-2] == sq else (mask,) * len(bands)
    outs = []
    for qi, mi in zip(qs, masks):
        outs.append(_attend(after(qi, outs[-1] if outs else None), kt, v, mi))
    return ops.cat(outs, 2)


def _attend(q, kt, v, mask):
    scores = ops.matmul(q, kt)
    if mask is not None:
        scores = scores + mask
    return ops.matmul(ops.softmax(scores, -1), v)


def sinusoidal_timestep_embedding(timesteps, dim: int, flip_sin_to_cos: bool = False,
                                  downscale_freq_shift: float = 1.0, scale: float = 1.0,
                                  max_period: int = 10000):
    """diffusers ``get_timestep_embedding`` on a 1-D tensor of timesteps -> (N, dim) float32."""
    half = dim // 2
    exponent = -math.log(max_period) * np.arange(half, dtype=np.float32) / (half - downscale_freq_shift)
    freqs = Tensor(np.exp(exponent).astype(np.float32))  # host-side table: exact, no device exp
    args = timesteps.astype(ms.float32)[:, None] * freqs[None, :] * scale
    emb = ops.cat([ops.sin(args), ops.cos(args)], -1)
    if flip_sin_to_cos:
        emb = ops.cat([emb[:, half:], emb[:, :half]], -1)
    if dim % 2 == 1:
        emb = ops.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Cell):
    """diffusers ``TimestepEmbedding``: linear_1 -> act -> linear_2."""

    def __init__(self, in_channels: int, time_embed_dim: int, act_fn: str = "silu", out_dim: int | None = None):
        super().__init__()
        self.linear_1 = linear(in_channels, time_embed_dim)
        self.linear_2 = linear(time_embed_dim, out_dim or time_embed_dim)
        if act_fn != "silu":
            raise ValueError(f"TimestepEmbedding act_fn={act_fn!r}: only 'silu' is supported")

    def construct(self, x):
        return self.linear_2(silu(self.linear_1(x)))


class GELUProjection(nn.Cell):
    """diffusers ``GELU`` activation module: ``proj`` linear, then gelu ("none" or "tanh")."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none", bias: bool = True):
        super().__init__()
        self.proj = linear(dim_in, dim_out, bias)
        self.approximate = approximate

    def construct(self, x):
        return gelu(self.proj(x), self.approximate)


class GEGLUProjection(nn.Cell):
    """diffusers ``GEGLU``: ``proj`` linear to 2 x dim_out, split into (value, gate), value * gelu(gate)
    (https://huggingface.co/papers/2002.05202)."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True):
        super().__init__()
        self.proj = linear(dim_in, 2 * dim_out, bias)

    def construct(self, x):
        value, gate = ops.chunk(self.proj(x), 2, -1)
        return value * gelu(gate)


FEEDFORWARD_ACTIVATIONS = {"gelu": "none", "gelu-approximate": "tanh", "geglu": None}


class FeedForward(nn.Cell):
    """diffusers ``FeedForward`` for the gelu / geglu activations: ``net.0.proj`` -> gelu (or GEGLU,
    whose ``proj`` is 2 x inner_dim wide) -> ``net.2`` (``net.1`` / ``net.3`` are parameter-free
    dropouts, identities at inference)."""

    def __init__(self, dim: int, dim_out: int | None = None, mult: float = 4, activation_fn: str = "gelu",
                 inner_dim: int | None = None, bias: bool = True):
        super().__init__()
        if activation_fn not in FEEDFORWARD_ACTIVATIONS:
            raise ValueError(f"FeedForward activation_fn={activation_fn!r}: supported {sorted(FEEDFORWARD_ACTIVATIONS)}")
        inner_dim = inner_dim or int(dim * mult)
        act = (GEGLUProjection(dim, inner_dim, bias) if activation_fn == "geglu"
               else GELUProjection(dim, inner_dim, FEEDFORWARD_ACTIVATIONS[activation_fn], bias))
        self.net = nn.CellList([act, nn.Identity(), linear(inner_dim, dim_out or dim, bias)])
        self.hidden_width = act.proj.out_channels

    def construct(self, x):
        """Rows (tokens) whose hidden activation is over ``FEEDFORWARD_HIDDEN_BYTES`` go a band at a time, one
        after the other (every row is independent: exact)."""
        rows = x.reshape(-1, x.shape[-1])
        bands = equal_bands(rows.shape[0], self.hidden_width * x.itemsize, FEEDFORWARD_HIDDEN_BYTES, MAX_BANDS)
        if len(bands) == 1:
            return self.net[2](self.net[0](x))
        outs = []
        for band in ops.split(rows, bands, 0):
            outs.append(self.net[2](self.net[0](after(band, outs[-1] if outs else None))))
        return ops.cat(outs, 0).reshape(x.shape[:-1] + (-1,))


class Attention(nn.Cell):
    """Multi-head attention with diffusers ``Attention`` parameter names: ``to_q``/``to_k``/``to_v``,
    ``to_out.0``, optional per-head LayerNorm on queries and keys (``norm_q``/``norm_k``, qk_norm="layer_norm").
    Self-attention by default; with ``cross_attention_dim`` keys and values are projected from a
    ``context`` of that width (to_k / to_v take it as input), and ``context=None`` means self-attention.

    ``project_qkv`` and ``project_out`` are exposed so a family can insert its own step between them
    (e.g. rotary embedding on part of the sequence); ``construct`` is plain softmax attention.
    """

    def __init__(self, query_dim: int, heads: int = 8, dim_head: int = 64, bias: bool = False,
                 out_bias: bool = True, qk_norm: str | None = None, eps: float = 1e-5,
                 elementwise_affine: bool = True, out_dim: int | None = None,
                 cross_attention_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        kv_dim = cross_attention_dim or query_dim
        self.to_q = linear(query_dim, inner, bias)
        self.to_k = linear(kv_dim, inner, bias)
        self.to_v = linear(kv_dim, inner, bias)
        self.to_out = nn.CellList([linear(inner, out_dim or query_dim, out_bias)])
        if qk_norm is None:
            self.norm_q = self.norm_k = None
        elif qk_norm == "layer_norm":
            self.norm_q = LayerNorm(dim_head, eps, elementwise_affine)
            self.norm_k = LayerNorm(dim_head, eps, elementwise_affine)
        else:
            raise ValueError(f"Attention qk_norm={qk_norm!r}: supported None, 'layer_norm'")

    def _heads(self, x):
        b, s, _ = x.shape
        return swap_middle_axes(x, b, s, self.heads)  # (B, H, S, Dh)

    def project_qkv(self, x, context=None):
        """(B, S, C) [and context (B, S', C')] -> q (B, heads, S, dim_head), k, v (B, heads, S' or S,
        dim_head); q and k normalised if qk_norm is set. ``context=None``: keys/values from ``x``."""
        kv = x if context is None else context
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(kv)), self._heads(self.to_v(kv))
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        return q, k, v

    def project_out(self, o):
        """(B, heads, S, dim_head) -> (B, S, out_dim)."""
        b, h, s, d = o.shape
        return self.to_out[0](swap_middle_axes(o, b, h, s).reshape(b, s, h * d))

    def construct(self, x, mask=None, context=None):
        q, k, v = self.project_qkv(x, context)
        return self.project_out(scaled_dot_product_attention(q, k, v, mask))


class Embedding(nn.Cell):
    """torch.nn.Embedding: a ``weight`` (num, dim) table looked up by integer ids."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        # an initializer, not an array: under no_init_parameters nothing is allocated before loading
        self.weight = Parameter(initializer(Normal(1.0), (num, dim), ms.float32))

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)) with logvar clamped to [-30, 20] (diffusers
    ``DiagonalGaussianDistribution``). ``sample`` takes the standard-normal noise (numpy, drawn on
    the host from a seeded generator) so results do not depend on the backend's RNG."""

    def __init__(self, moments: Tensor):
        c = moments.shape[1] // 2
        self.mean = moments[:, :c]
        self.logvar = ops.clamp(moments[:, c:], -30.0, 20.0)
        self.std = ops.exp(0.5 * self.logvar)

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, noise) -> Tensor:
        noise = noise if isinstance(noise, Tensor) else Tensor(np.asarray(noise, np.float32))
        return self.mean + self.std * noise
