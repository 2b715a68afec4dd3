"""Reference-free video metrics on videos whose answer is known in closed form."""
import numpy as np

from toolkit import metrics


def moving_square(shift=(2, 3), n=5, h=32, w=40):
    f = np.zeros((n, h, w, 3), np.float32)
    for i in range(n):
        y, x = 8 + i * shift[0], 8 + i * shift[1]
        f[i, y:y + 6, x:x + 6] = 1.0
    return f


def test_still_video_has_no_change_and_no_motion():
    f = np.repeat(moving_square(n=1), 4, axis=0)
    assert metrics.temporal_change(f) == 0.0
    assert metrics.motion_magnitude(f) == 0.0


def test_motion_of_a_translating_square_is_its_speed():
    assert abs(metrics.motion_magnitude(moving_square((3, 4))) - 5.0) < 1e-9


def test_global_shift_recovers_direction():
    f = metrics.luma(moving_square((2, -3)))
    assert metrics.global_shift(f[0], f[1]) == (2.0, -3.0)


def test_temporal_change_counts_changed_pixels():
    f = np.zeros((2, 10, 10, 3), np.float32)
    f[1, :5] = 1.0  # half the pixels go from 0 to 1
    assert metrics.temporal_change(f) == 0.5


def test_sharpness_is_zero_for_flat_and_higher_for_edges():
    flat = np.full((2, 16, 16, 3), 0.5, np.float32)
    edges = flat.copy()
    edges[:, :, ::2] = 1.0
    assert metrics.sharpness(flat) == 0.0
    assert abs(metrics.sharpness(edges) - 1.0) < 1e-12  # Laplacian is +-1 on alternate columns


def test_colour_stats_of_pure_red():
    f = np.zeros((2, 4, 4, 3), np.float32)
    f[..., 0] = 1.0
    s = metrics.colour_stats(f)
    assert (s["mean_r"], s["mean_g"], s["saturation"]) == (1.0, 0.0, 1.0)
    assert abs(s["brightness"] - 0.299) < 1e-12
