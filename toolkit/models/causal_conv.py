"""Causal 3-D convolution with an explicit temporal cache, and frame-chunked execution.

Video VAEs (CogVideoX, Mochi, HunyuanVideo, Wan, LTX) convolve over time causally: output frame t
sees input frames <= t only. Long videos are processed a few frames at a time; the last ``kt - 1``
input frames of one chunk are the temporal padding of the next. Here that cache is a value: a
causal conv takes it as an argument and returns the new one, and a network threads a (nested)
dict of them. Nothing is kept in module state, so a decode is a pure function of its inputs.

Ported from diffusers ``CogVideoXSafeConv3d`` / ``CogVideoXCausalConv3d``
(diffusers/models/autoencoders/autoencoder_kl_cogvideox.py); parameter names match its
checkpoints (``conv.weight``, ``conv.bias``). Layout (B, C, F, H, W).
"""
from __future__ import annotations

from typing import Callable

from mindspore import Tensor, nn, ops

from toolkit.models.layers import Conv3d


def _triple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class SafeConv3d(Conv3d):
    """``Conv3d`` that splits very large inputs along time (diffusers ``CogVideoXSafeConv3d``).

    Above ``max_gib`` (diffusers: 2 GiB, counting 2 bytes per value) the input is cut into
    ``int(GiB / max_gib) + 1`` chunks (``torch.chunk`` sizes), each after the first prefixed with the
    previous chunk's last ``kt - 1`` frames, so the result equals the unsplit convolution (for
    temporal stride 1, which is all CogVideoX uses).
    """

    max_gib = 2.0

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.time_kernel_size = _triple(kernel_size)[0]

    def construct(self, x):
        b, c, f, h, w = x.shape
        gib = b * c * f * h * w * 2 / 1024**3
        if gib <= self.max_gib:
            return super().construct(x)
        parts = int(gib / self.max_gib) + 1
        step = -(-f // parts)  # torch.chunk: ceil-sized chunks, possibly fewer than asked
        starts = list(range(0, f, step))
        k = self.time_kernel_size
        outs = []
        for i, s in enumerate(starts):
            lo = s if i == 0 or k == 1 else s - (k - 1)
            outs.append(super().construct(x[:, :, lo:s + step]))
        return ops.cat(outs, 2)


class CausalConv3d(nn.Cell):
    """Causal conv over time: ``construct(x, cache) -> (y, new_cache)``.

    ``time_pad``:
      * ``"first"`` (CogVideoX; diffusers calls it "constant"/"first"): the ``kt - 1`` frames before
        ``x`` are ``cache`` if given, else copies of ``x``'s first frame; H and W are zero-padded by
        the conv. ``new_cache`` = the last ``kt - 1`` frames of the padded input.
      * ``"zeros"``: as "first" but a missing cache means zero frames (Wan-style).
      * ``"replicate"`` (Mochi): replicate-pad time (front) and H, W; no cache (returns None).
    A temporal kernel of 1 needs no cache; None is returned for it. Parameters: ``conv.weight``, ``conv.bias``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, dilation: int = 1,
                 time_pad: str = "first"):
        super().__init__()
        if time_pad == "constant":  # diffusers' name for the same behaviour
            time_pad = "first"
        if time_pad not in ("first", "zeros", "replicate"):
            raise ValueError(f"CausalConv3d time_pad={time_pad!r}: expected 'first', 'zeros' or 'replicate'")
        if dilation != 1:
            raise ValueError("CausalConv3d: only dilation=1 is supported")
        kt, kh, kw = _triple(kernel_size)
        self.time_pad = time_pad
        self.time_kernel_size = kt
        self.height_pad = (kh - 1) // 2
        self.width_pad = (kw - 1) // 2
        stride = stride if isinstance(stride, (tuple, list)) else (stride, 1, 1)
        if time_pad == "replicate":
            padding = 0
        else:
            # diffusers passes padding=(0, width_pad, height_pad) to torch's (T, H, W) padding: H is padded
            # by the width pad and W by the height pad. Kept as is (identical for square kernels).
            padding = (0, self.width_pad, self.height_pad)
        self.conv = SafeConv3d(in_channels, out_channels, (kt, kh, kw), stride=stride, padding=padding)

    def construct(self, x, cache=None):
        kt = self.time_kernel_size
        if self.time_pad == "replicate":
            p = (self.width_pad, self.width_pad, self.height_pad, self.height_pad, kt - 1, 0)
            return self.conv(ops.pad(x, p, mode="replicate")), None
        if kt == 1:
            return self.conv(x), None
        if cache is not None:
            x = ops.cat([cache, x], 2)
        elif self.time_pad == "first":
            x = ops.cat([x[:, :, :1]] * (kt - 1) + [x], 2)
        else:
            x = ops.cat([ops.zeros_like(x[:, :, :1])] * (kt - 1) + [x], 2)
        return self.conv(x), x[:, :, -(kt - 1):]


def frame_chunks(num_frames: int, frames_per_chunk: int) -> list[tuple[int, int]]:
    """CogVideoX's temporal chunking: ``max(F // n, 1)`` chunks of ``n`` frames, the remainder
    ``F % n`` added to the first chunk (13 latent frames, n=2 -> (0,3), (3,5), ..., (11,13)).
    Every frame is in exactly one chunk; for F < n the one chunk's end passes F (slicing clamps it).
    """
    n = frames_per_chunk
    r = num_frames % n
    count = max(num_frames // n, 1)
    return [(0 if i == 0 else n * i + r, n * (i + 1) + r) for i in range(count)]


def run_in_chunks(fn: Callable, x: Tensor, chunks, cache=None):
    """``fn(x[:, :, s:e], cache) -> (y, cache)`` over the chunks, threading the cache;
    returns (outputs concatenated along frames, final cache)."""
    outs = []
    for s, e in chunks:
        y, cache = fn(x[:, :, s:e], cache)
        outs.append(y)
    return (outs[0] if len(outs) == 1 else ops.cat(outs, 2)), cache
