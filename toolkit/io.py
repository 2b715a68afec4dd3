"""Reading and writing images and videos, and writing run outputs atomically.

Every writer goes through ``atomic_path``: the file is written under a temporary name in the same
folder and renamed into place only when complete, so an interrupted run leaves no half-written
``video.mp4`` or ``frames.npy``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
    return Path(path)


def save_json(path: str | Path, obj) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
    return Path(path)


def to_uint8(frames) -> np.ndarray:
    """(F, H, W, 3) float in [0, 1] (or uint8, or a list of PIL images) -> uint8 array."""
    if isinstance(frames, (list, tuple)) and frames and not isinstance(frames[0], np.ndarray):
        frames = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames must be (F, H, W, C) with C in 1, 3, 4; got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, -1)
    return frames[..., :3]


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sizes: pad odd sizes by repeating the last row/column, never resize."""
    f, h, w, c = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def export_to_video(frames, path: str | Path, fps: float = 8, quality: int = 18) -> Path:
    """Write an H.264 mp4 (yuv420p, playable anywhere) with the frames' exact size (odd sizes padded by one)."""
    import imageio_ffmpeg

    frames = pad_to_even(to_uint8(frames))
    if len(frames) == 0:
        raise ValueError("export_to_video: no frames to write")
    f, h, w, _ = frames.shape
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            macro_block_size=1, output_params=["-crf", str(quality), "-f", "mp4"], ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return Path(path)


def export_to_gif(frames, path: str | Path, fps: float = 8) -> Path:
    from PIL import Image

    frames = to_uint8(frames)
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(round(1000 / fps)), loop=0)
    return Path(path)


def _read_bytes(source: str, what: str) -> bytes:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as r:
                return r.read()
        except Exception as e:
            raise ValueError(f"{what}={source!r}: cannot download: {e}") from e
    p = Path(os.path.expanduser(source))
    if not p.is_file():
        raise ValueError(f"{what}={source!r}: no such file")
    return p.read_bytes()


def load_image(source, what: str = "image"):
    """A PIL RGB image from a path, a URL, a PIL image or an (H, W, 3) array (uint8, or float in [0, 1])."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        return Image.fromarray(to_uint8(source[None])[0])
    try:
        return Image.open(io.BytesIO(_read_bytes(str(source), what))).convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{what}={source!r}: not a readable image") from None


def load_video(source, what: str = "video") -> np.ndarray:
    """uint8 frames (F, H, W, 3) from an mp4/mov/webm, an animated gif, a .npy of frames, or an array."""
    if isinstance(source, np.ndarray):
        return to_uint8(source)
    source = str(source)
    suffix = Path(source.split("?")[0]).suffix.lower()
    data = _read_bytes(source, what)
    try:
        if suffix == ".npy":
            return to_uint8(np.load(io.BytesIO(data), allow_pickle=False))
        if suffix == ".gif":
            from PIL import Image, ImageSequence

            im = Image.open(io.BytesIO(data))
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
        if suffix in VIDEO_SUFFIXES:
            import imageio_ffmpeg

            with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
                tmp.write(data)
                tmp.flush()
                gen = imageio_ffmpeg.read_frames(tmp.name, pix_fmt="rgb24")
                meta = next(gen)
                w, h = meta["size"]
                frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
            return np.stack(frames)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{what}={source!r}: not a readable video: {e}") from e
    raise ValueError(f"{what}={source!r}: unknown video format {suffix!r}; allowed: .npy, .gif, "
                     + ", ".join(VIDEO_SUFFIXES))


def read_video_info(path: str | Path) -> dict:
    """Frame count and size of an encoded video, read back by ffmpeg (used by tests and reports)."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(gen)
    n = sum(1 for _ in gen)
    return {"frames": n, "size": tuple(meta["size"]), "fps": meta.get("fps"), "codec": meta.get("codec")}

