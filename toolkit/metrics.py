"""Reference-free per-video metrics that make ablations comparable: pure numpy on frames
(F, H, W, 3) float in [0, 1]. Each is a small named function; ``video_metrics`` collects them."""
from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], np.float64)


def luma(frames: np.ndarray) -> np.ndarray:
    return np.asarray(frames, np.float64) @ LUMA


def temporal_change(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame difference (0: a still image; lower is more temporally consistent)."""
    f = np.asarray(frames, np.float64)
    if len(f) < 2:
        return 0.0
    return float(np.abs(np.diff(f, axis=0)).mean())


def global_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dy, dx) translation from luma frame ``a`` to ``b`` by phase correlation, in pixels."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-12)).real
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = a.shape
    return float(dy - h if dy > h // 2 else dy), float(dx - w if dx > w // 2 else dx)


def motion_magnitude(frames: np.ndarray) -> float:
    """Mean global motion between consecutive frames, in pixels per frame (phase correlation)."""
    y = luma(frames)
    if len(y) < 2:
        return 0.0
    return float(np.mean([np.hypot(*global_shift(y[i], y[i + 1])) for i in range(len(y) - 1)]))


def sharpness(frames: np.ndarray) -> float:
    """Mean variance of the 4-neighbour Laplacian of luma (higher is sharper)."""
    y = luma(frames)
    lap = (-4 * y[:, 1:-1, 1:-1] + y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:])
    return float(lap.reshape(len(y), -1).var(axis=1).mean())


def colour_stats(frames: np.ndarray) -> dict[str, float]:
    f = np.asarray(frames, np.float64)
    mx, mn = f.max(-1), f.min(-1)
    saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)
    out = {f"mean_{c}": float(f[..., i].mean()) for i, c in enumerate("rgb")}
    out.update({f"std_{c}": float(f[..., i].std()) for i, c in enumerate("rgb")})
    out["brightness"] = float(luma(f).mean())
    out["saturation"] = float(saturation.mean())
    return out


def video_metrics(frames: np.ndarray) -> dict[str, float]:
    return {"temporal_change": temporal_change(frames), "motion_px_per_frame": motion_magnitude(frames),
            "sharpness": sharpness(frames), **colour_stats(frames)}
