"""Bad input stops with an error naming the key and the allowed values, before any weights load."""

import numpy as np
import pytest

from tests.cli import generate, with_
from toolkit import loading, runner
from toolkit.pipelines.common import RequestError






CASES = [
    ({"height": 60}, r"height=60: must be divisible by 16 .*nearest allowed: \[48, 64\]"),
    ({"width": 100}, r"width=100: must be divisible by 16"),
    ({"num_frames": 10}, r"num_frames=10: must be 4k\+1 .*allowed: 9, 13"),
    ({"num_frames": 13}, r"num_frames=13: the VAE decodes 4 latent frames in chunks of 2 into 16 frames, not 13 "
                         r"\(allowed: 9, 17\)"),
    ({"num_inference_steps": 0}, r"num_inference_steps=0: must be >= 1"),
    ({"guidance_scale": "abc"}, r"guidance_scale='abc': must be a number"),
    ({"prompt_embeds": "x.npy"}, r"prompt_embeds='x.npy': given together with prompt"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, r"negative_prompt=.*has 3 entries but prompt has 2"),
    ({"model.dtype": "float64"}, r"model.dtype='float64': unknown value \(allowed: float32, float16, bfloat16\)"),
    ({"model.family": "sora"}, r"model.family='sora': unknown value \(allowed: cogvideox"),
    ({"model.path": "embedded:nope"}, r"embedded:nope: unknown embedded checkpoint \(allowed: embedded:tiny-cogvideox\)"),
    ({"vae.posterior": "mean"}, r"vae.posterior='mean': unknown value \(allowed: sample, mode\)"),
    ({"output.fps": 0}, r"output.fps=0: must be a positive number"),
    ({"runtime.batch_guidance": "yes"}, r"runtime.batch_guidance='yes': unknown value \(allowed: True, False\)"),
    ({"scheduler.timestep_spacing": "evenly"}, r"timestep_spacing.*evenly.*leading"),
    ({"vae.tiling": True, "vae.tile_sample_min_height": 20}, r"vae.tile_sample_min_height=20: must be divisible by 8"),
]


@pytest.mark.parametrize("changes,message", CASES, ids=[next(iter(c)) for c, _ in CASES])
def test_bad_value_is_refused_before_loading(base_request, no_loading, changes, message, tmp_path):
    with pytest.raises((RequestError, ValueError, loading.CheckpointError), match=message):
        runner.run(with_(base_request, **changes), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_model_folder_is_named(base_request, no_loading, tmp_path):
    with pytest.raises(loading.CheckpointError, match=r"model.path='/nonexistent/ckpt': no such folder"):
        runner.run(with_(base_request, **{"model.path": "/nonexistent/ckpt"}), tmp_path / "run")


def test_latents_file_of_wrong_shape_is_refused(base_request, no_loading, tmp_path):
    np.save(tmp_path / "lat.npy", np.zeros((1, 2, 4, 8, 12), np.float32))
    with pytest.raises(RequestError, match=r"latents=.*shape \(1, 2, 4, 8, 12\), expected \(1, 3, 4, 8, 12\)"):
        runner.run(with_(base_request, latents=str(tmp_path / "lat.npy")), tmp_path / "run")


def test_latents_file_of_wrong_dtype_is_refused(base_request, no_loading, tmp_path):
    np.save(tmp_path / "lat.npy", np.zeros((1, 3, 4, 8, 12), np.float64))
    with pytest.raises(RequestError, match=r"latents=.*dtype float64, expected float32"):
        runner.run(with_(base_request, latents=str(tmp_path / "lat.npy")), tmp_path / "run")


def test_cli_reports_the_error_and_exits_nonzero_without_output(tmp_path):
    proc = generate("num_frames=12", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0
    assert "num_frames=12: must be 4k+1" in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "frames.npy").exists() and not (tmp_path / "run" / "video.mp4").exists()


def test_cli_unknown_key_is_named(tmp_path):
    proc = generate("guidnce_scale=3", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0 and "guidnce_scale" in proc.stderr


def test_cli_unknown_preset_lists_the_presets(tmp_path):
    proc = generate("model=cogvideox_9b", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0 and "cogvideox_5b" in proc.stderr


@pytest.mark.parametrize("jit, hint", [(True, r"try runtime.jit=false .*, runtime.batch_guidance=false .*, fewer "),
                                       (False, r"try runtime.batch_guidance=false .*, fewer num_frames, ")])
def test_running_out_of_memory_names_the_settings_that_need_less(base_request, monkeypatch, tmp_path, jit, hint):
    """MindSpore's allocation failure ('Memory not enough', a RuntimeError) becomes an error that says what to
    change -- eager steps first when compiled, then guidance's passes one after the other -- and leaves no output."""
    from toolkit.pipelines import cogvideox

    def fail(*args, **kwargs):
        raise RuntimeError("- Memory not enough:\nMemory isn't enough and alloc failed, alloc size: 1342177280B.")
    monkeypatch.setattr(cogvideox, "generate", fail)
    with pytest.raises(runner.OutOfMemory, match=r"out of memory at num_frames=9, .*" + hint):
        runner.run(with_(base_request, **{"runtime.jit": jit}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_out_of_memory_hint_names_the_decode_settings_the_family_has():
    """SVD's temporal decoder has no tiled mode: its hint halves decode_chunk_size instead of naming vae.tiling;
    settings already at their leanest are not suggested again."""
    lean = {"runtime": {"jit": False, "batch_guidance": False}}
    svd = {"num_frames": 14, "height": 576, "width": 1024, "decode_chunk_size": 8, "vae_tiling": {"enabled": False}}
    hint = runner.out_of_memory_hint(lean, svd, vae_tiling=False)
    assert hint.endswith("try fewer num_frames, a smaller height/width, or decode_chunk_size=4 or less (frames "
                         "decoded at a time)")
    tiled = runner.out_of_memory_hint(lean, {**svd, "decode_chunk_size": 1, "vae_tiling": {"enabled": True}})
    assert tiled.endswith("try fewer num_frames, or a smaller height/width")
