"""The embedded default: `python experiments/generate.py` with no arguments works offline, and the
checkpoint it writes is a genuine diffusers-format CogVideoX checkpoint."""
import hashlib
import json

import numpy as np
import pytest

from tests.cli import generate
from toolkit import embedded
from toolkit.io import read_video_info


def test_no_argument_run_writes_frames_video_and_record(tmp_path):
    generate(f"hydra.run.dir={tmp_path}", "runtime.progress=false")
    frames = np.load(tmp_path / "frames.npy")
    assert frames.shape == (9, 64, 96, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.01
    assert read_video_info(tmp_path / "video.mp4")["frames"] == 9
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"]["model"]["path"] == "embedded:tiny-cogvideox"
    assert set(record["timings_s"]) >= {"load", "encode_prompt", "denoise", "decode", "total"}
    assert record["peak_rss_mb"] > 0


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_embedded_checkpoint_is_written_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDVIDEO_CACHE", str(tmp_path / "a"))
    a = embedded.ensure("tiny-cogvideox")
    monkeypatch.setenv("MINDVIDEO_CACHE", str(tmp_path / "b"))
    b = embedded.ensure("tiny-cogvideox")
    assert digest(a) == digest(b)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp folder left


def test_diffusers_loads_the_embedded_checkpoint_and_agrees(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from tests.reference import cogvideox as ref

    folder = embedded.ensure("tiny-cogvideox")
    pipe = diffusers.CogVideoXPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    latents = np.random.default_rng(5).standard_normal((1, 3, 4, 8, 12)).astype(np.float32)
    np.save(tmp_path / "latents.npy", latents)
    ref.feed_numpy_noise(monkeypatch, 42)
    expected = np.asarray(pipe(prompt="a panda plays guitar", negative_prompt="", num_inference_steps=2,
                               guidance_scale=6.0, use_dynamic_cfg=True, num_frames=9, height=64, width=96,
                               latents=torch.from_numpy(latents), max_sequence_length=32,
                               output_type="np").frames[0])
    generate(f"hydra.run.dir={tmp_path / 'run'}", f"latents={tmp_path / 'latents.npy'}", "num_inference_steps=2",
             "prompt=a panda plays guitar", "seed=42", "runtime.progress=false")
    np.testing.assert_allclose(np.load(tmp_path / "run" / "frames.npy"), expected, atol=1e-4, rtol=0)
