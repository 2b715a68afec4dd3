"""Video and image I/O, and atomic writes."""
import numpy as np
import pytest

from toolkit import io as tio


def frames(n=5, h=17, w=23, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


def test_video_is_h264_with_every_frame_and_odd_sizes_padded_by_one(tmp_path):
    path = tio.export_to_video(frames(), tmp_path / "v.mp4", fps=7)
    info = tio.read_video_info(path)
    assert info["frames"] == 5 and info["codec"] == "h264"
    assert info["size"] == (24, 18)  # (w, h): 23x17 padded, never resized
    assert info["fps"] == 7


def test_video_round_trip_keeps_the_picture(tmp_path):
    smooth = np.broadcast_to(np.linspace(0, 1, 32, dtype=np.float32)[None, None, :, None], (3, 16, 32, 3))
    back = tio.load_video(tio.export_to_video(smooth, tmp_path / "v.mp4")) / 255.0
    assert np.abs(back - smooth).mean() < 0.02


def test_empty_video_is_refused(tmp_path):
    with pytest.raises(ValueError):
        tio.export_to_video(np.zeros((0, 8, 8, 3), np.float32), tmp_path / "v.mp4")
    assert not list(tmp_path.iterdir())


def test_gif_and_npy_round_trip_exactly(tmp_path):
    f = frames()
    u8 = tio.to_uint8(f)
    assert np.array_equal(tio.load_video(tio.export_to_gif(f, tmp_path / "v.gif")).shape, u8.shape)
    np.save(tmp_path / "v.npy", u8)
    assert np.array_equal(tio.load_video(tmp_path / "v.npy"), u8)


def test_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "frames.npy"
    with pytest.raises(KeyboardInterrupt):
        with tio.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_unreadable_inputs_name_the_key(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"image=.*not a readable image"):
        tio.load_image(str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match=r"video=.*no such file"):
        tio.load_video(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match=r"unknown video format '.txt'"):
        (tmp_path / "x.txt").write_text("x")
        tio.load_video(str(tmp_path / "x.txt"))


def test_load_image_accepts_arrays_and_paths(tmp_path):
    from PIL import Image
    arr = (frames(1)[0] * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "i.png")
    assert np.array_equal(np.asarray(tio.load_image(str(tmp_path / "i.png"))), arr)
    assert np.array_equal(np.asarray(tio.load_image(arr)), arr)
