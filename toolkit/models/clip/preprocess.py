"""Images -> CLIP image-encoder pixels, on the host with numpy, as the diffusers pipelines prepare them.

Stable Video Diffusion (``StableVideoDiffusionPipeline._encode_image``): the image as float [0, 1], mapped
to [-1, 1], resized to 224 x 224 by ``_resize_with_antialiasing`` (a Gaussian blur whose sigma follows
the down-scaling factor, as skimage chooses it, then torch's bicubic interpolation with
``align_corners=True``), mapped back to [0, 1] and normalized with the checkpoint's
``feature_extractor/preprocessor_config.json`` mean and std (CLIPImageProcessor with
``do_resize=do_center_crop=do_rescale=False``).

I2VGen-XL (``I2VGenXLPipeline``): the PIL image box-resized so that its short side fits the crop and
center-cropped to ``width`` x ``width`` (``_center_crop_wide``), bilinearly resized by PIL to the feature
extractor's crop size (``_resize_bilinear``), then ``/ 255`` and the same normalization.

The interpolation weights are computed with float32 index arithmetic exactly as PyTorch's CPU kernels
do, so the results agree with diffusers to float32 rounding.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CUBIC_A = -0.75  # PyTorch's (and Keys') bicubic coefficient


def read_image_processor_config(folder: str | Path, subfolder: str | None = "feature_extractor") -> dict:
    """The checkpoint's ``preprocessor_config.json`` with ``image_mean``/``image_std`` filled in with
    OpenAI CLIP's statistics when absent (CLIPImageProcessor's defaults)."""
    d = Path(folder) / subfolder if subfolder else Path(folder)
    path = d / "preprocessor_config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"missing image processor config {path}") from None
    config.setdefault("image_mean", list(OPENAI_CLIP_MEAN))
    config.setdefault("image_std", list(OPENAI_CLIP_STD))
    return config


def to_float_images(image) -> np.ndarray:
    """A PIL image, a list of them, or an array (H, W, C) / (B, H, W, C) -> (B, H, W, C) float32 in [0, 1].

    uint8 arrays and PIL images are divided by 255 (diffusers' ``pil_to_numpy``); float arrays are
    taken to be in [0, 1] already.
    """
    if isinstance(image, (list, tuple)):
        return np.concatenate([to_float_images(im) for im in image], 0)
    if hasattr(image, "convert"):  # PIL
        return (np.asarray(image.convert("RGB")).astype(np.float32) / 255.0)[None]
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"image array must be (H, W, C) or (B, H, W, C), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return a.astype(np.float32)


def clip_normalize(pixels: np.ndarray, image_mean, image_std) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (x - mean) / std per channel, float32 (CLIPImageProcessor's normalize)."""
    mean = np.asarray(image_mean, np.float32)[None, :, None, None]
    std = np.asarray(image_std, np.float32)[None, :, None, None]
    return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# diffusers' _resize_with_antialiasing (ported from kornia), NCHW float32


def gaussian_kernel1d(window_size: int, sigma: float) -> np.ndarray:
    """Normalized Gaussian taps centred on the window (half-integer offsets for even windows)."""
    x = np.arange(window_size, dtype=np.float32) - np.float32(window_size // 2)
    if window_size % 2 == 0:
        x = x + np.float32(0.5)
    sigma = np.float32(sigma)
    g = np.exp(-(x * x) / (np.float32(2.0) * sigma * sigma)).astype(np.float32)
    return (g / g.sum()).astype(np.float32)


def _filter_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Cross-correlate ``x`` with a 1-D kernel along ``axis`` after reflect padding ("same" size)."""
    k = len(kernel)
    front = (k - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (front, k - 1 - front)
    xp = np.pad(x, pad, mode="reflect")  # torch's "reflect" (edge not repeated) is numpy's "reflect"
    n = x.shape[axis]
    out = np.zeros(x.shape, np.float64)
    for j, w in enumerate(kernel):
        out += float(w) * np.take(xp, np.arange(j, j + n), axis=axis)
    return out.astype(np.float32)


def gaussian_blur2d(x: np.ndarray, kernel_size: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Separable Gaussian blur of (B, C, H, W): along width with sigma[1], then height with sigma[0]."""
    out = _filter_axis(x, gaussian_kernel1d(int(kernel_size[1]), sigma[1]), axis=3)
    return _filter_axis(out, gaussian_kernel1d(int(kernel_size[0]), sigma[0]), axis=2)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """PyTorch's ``get_cubic_upsample_coefficients`` (A = -0.75) for fractional offsets t -> (N, 4)."""
    a = np.float32(CUBIC_A)
    t = t.astype(np.float32)

    def conv1(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def conv2(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    one = np.float32(1.0)
    return np.stack([conv2(t + one), conv1(t), conv1(one - t), conv2(one - t + one)], -1).astype(np.float32)


def interpolation_matrix(in_size: int, out_size: int, mode: str = "bicubic",
                         align_corners: bool = False) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with ``out = M @ in`` along one axis, reproducing
    ``torch.nn.functional.interpolate(size=..., mode=mode, align_corners=...)`` on CPU (float32 source
    coordinates; border taps clamped to the edge)."""
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation mode={mode!r}: supported 'bicubic', 'bilinear'")
    dst = np.arange(out_size, dtype=np.float32)
    if align_corners:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0.0)
        src = scale * dst
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        # PyTorch's kernel computes scale * (dst + 0.5) - 0.5 with one fused multiply-add: exact in
        # float64 (a 24-bit by 10-bit product), rounded once to float32
        src = (scale.astype(np.float64) * (dst.astype(np.float64) + 0.5) - 0.5).astype(np.float32)
        if mode == "bilinear":
            src = np.maximum(src, np.float32(0.0))
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if mode == "bicubic":
        base = np.floor(src).astype(np.int64)
        base = np.minimum(base, in_size - 1)
        t = np.clip(src - base.astype(np.float32), 0.0, 1.0)
        w = _cubic_weights(t)
        for j in range(4):
            idx = np.clip(base - 1 + j, 0, in_size - 1)
            np.add.at(m, (rows, idx), w[:, j])
    else:
        i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        i1 = i0 + (i0 < in_size - 1)
        l1 = (src - i0.astype(np.float32)).astype(np.float32)
        np.add.at(m, (rows, i0), np.float32(1.0) - l1)
        np.add.at(m, (rows, i1), l1)
    return m


def interpolate(x: np.ndarray, size: tuple[int, int], mode: str = "bicubic",
                align_corners: bool = False) -> np.ndarray:
    """torch.nn.functional.interpolate on (B, C, H, W) float32 for ``bicubic`` and ``bilinear``."""
    wy = interpolation_matrix(x.shape[2], size[0], mode, align_corners)
    wx = interpolation_matrix(x.shape[3], size[1], mode, align_corners)
    return np.einsum("oh,bchw,pw->bcop", wy, x.astype(np.float64), wx, optimize=True).astype(np.float32)


def resize_with_antialiasing(x: np.ndarray, size: tuple[int, int], interpolation: str = "bicubic",
                             align_corners: bool = True) -> np.ndarray:
    """diffusers' ``_resize_with_antialiasing`` on (B, C, H, W) float32.

    Blur with sigma = max((factor - 1) / 2, 0.001) per axis (skimage's choice) and an odd kernel of
    about 4 sigma (at least 3 taps), then interpolate to ``size`` = (height, width).
    """
    h, w = x.shape[-2:]
    factors = (h / size[0], w / size[1])
    sigmas = (max((factors[0] - 1.0) / 2.0, 0.001), max((factors[1] - 1.0) / 2.0, 0.001))
    ks = [int(max(2.0 * 2 * s, 3)) for s in sigmas]
    ks = tuple(k + 1 if k % 2 == 0 else k for k in ks)
    blurred = gaussian_blur2d(np.asarray(x, np.float32), ks, sigmas)
    return interpolate(blurred, size, interpolation, align_corners)


# ---------------------------------------------------------------------------------------------------
# whole pipelines' preprocessing


def svd_clip_pixels(image, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
                    size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """Stable Video Diffusion's CLIP input: image(s) -> (B, 3, 224, 224) float32 normalized pixels."""
    x = to_float_images(image).transpose(0, 3, 1, 2)
    x = x * np.float32(2.0) - np.float32(1.0)
    x = resize_with_antialiasing(x, size)
    x = (x + np.float32(1.0)) / np.float32(2.0)
    return clip_normalize(x, image_mean, image_std)


def i2vgen_xl_clip_pixels(image, width: int, crop_size: tuple[int, int] = (224, 224),
                          image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD) -> np.ndarray:
    """I2VGen-XL's CLIP input: a PIL image -> (1, 3, crop_h, crop_w) float32 normalized pixels.

    ``_center_crop_wide`` to (width, width) with PIL's box filter, then PIL bilinear resize to
    ``crop_size`` = (height, width) of the feature extractor, then ``/ 255`` and normalize.
    """
    from PIL import Image

    if not hasattr(image, "resize"):
        image = Image.fromarray(np.asarray(image))
    image = image.convert("RGB")
    scale = min(image.size[0] / width, image.size[1] / width)
    image = image.resize((round(image.width // scale), round(image.height // scale)), resample=Image.BOX)
    x1, y1 = (image.width - width) // 2, (image.height - width) // 2
    image = image.crop((x1, y1, x1 + width, y1 + width))
    image = image.resize((crop_size[1], crop_size[0]), Image.BILINEAR)
    return clip_normalize(to_float_images(image).transpose(0, 3, 1, 2), image_mean, image_std)
