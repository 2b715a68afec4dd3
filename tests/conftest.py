"""Shared fixtures. Reference checkpoints are built by diffusers into a per-session temp folder;
tests that need them skip with a reason when torch/diffusers are not installed."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import mindspore as ms  # noqa: E402

ms.runtime.launch_blocking()  # as the entry point does: tiny eager networks run ~2-10x faster on 2 cores


def _require_reference():
    pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
    pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")


@pytest.fixture(scope="session")
def cogvideox_ref(tmp_path_factory):
    """``cogvideox_ref(flavour, scheduler)`` -> (folder, diffusers pipeline), built once per session."""
    _require_reference()
    from tests.reference import cogvideox as ref

    cache = {}

    def get(flavour="5b", scheduler="CogVideoXDDIMScheduler", **kw):
        key = (flavour, scheduler, tuple(sorted(kw.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"cogvideox_{flavour}_{scheduler}")
            cache[key] = (folder, ref.build(folder, flavour, scheduler, **kw))
        return cache[key]

    return get


@pytest.fixture
def rng():
    return np.random.Generator(np.random.PCG64(1234))


@pytest.fixture(scope="session", autouse=True)
def embedded_cache(tmp_path_factory):
    """Embedded checkpoints are written into a per-session cache (also seen by CLI subprocesses)."""
    path = tmp_path_factory.mktemp("mindvideo_cache")
    old = os.environ.get("MINDVIDEO_CACHE")
    os.environ["MINDVIDEO_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MINDVIDEO_CACHE", None)
    else:
        os.environ["MINDVIDEO_CACHE"] = old


@pytest.fixture(scope="session")
def base_request():
    """The default config (embedded tiny CogVideoX) as the plain dict the runner takes, tiny settings."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("generate", overrides=["num_inference_steps=2", "runtime.progress=false"])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="session")
def cogvideox_i2v_ref(tmp_path_factory):
    """``cogvideox_i2v_ref(flavour, scheduler)`` -> (folder, diffusers CogVideoXImageToVideoPipeline), built once
    per session; flavours "5b-i2v" (learned positional embedding) and "1.5-i2v" (ofs, patch_size_t)."""
    _require_reference()
    from tests.reference import cogvideox_i2v as ref

    cache = {}

    def get(flavour="5b-i2v", scheduler="CogVideoXDDIMScheduler"):
        if (flavour, scheduler) not in cache:
            folder = tmp_path_factory.mktemp(f"cogvideox_{flavour}_{scheduler}")
            cache[flavour, scheduler] = (folder, ref.build_i2v(folder, flavour, scheduler))
        return cache[flavour, scheduler]

    return get


@pytest.fixture(scope="session")
def animatediff_ref(tmp_path_factory):
    """(SD-format base folder, motion-adapter folder, diffusers AnimateDiffPipeline on both), built once per
    session (tests/reference/animatediff.py)."""
    _require_reference()
    from tests.reference import animatediff as ref

    base, adapter = tmp_path_factory.mktemp("animatediff_sd"), tmp_path_factory.mktemp("animatediff_adapter")
    return base, adapter, ref.build(base, adapter)


@pytest.fixture(scope="session")
def svd_ref(tmp_path_factory):
    """``svd_ref(variant=None)`` -> (folder, diffusers StableVideoDiffusionPipeline), the tiny checkpoint of
    tests/reference/svd.py built once per session; ``variant="fp16"`` stores it in float16 variant files (the
    returned pipeline holds those float16-rounded weights, in float32)."""
    _require_reference()
    from tests.reference import svd as ref

    cache = {}

    def get(variant=None):
        if variant not in cache:
            folder = tmp_path_factory.mktemp(f"svd_{variant or 'fp32'}")
            cache[variant] = (folder, ref.build(folder, variant=variant))
        return cache[variant]

    return get


@pytest.fixture
def no_loading(monkeypatch):
    """Any weight loading fails the test: proves a request was refused before loading."""
    from toolkit import loading, runner

    def refuse(*a, **k):
        raise AssertionError("weights were loaded before the request was checked")
    monkeypatch.setattr(loading, "build_and_load", refuse)
    monkeypatch.setattr(loading, "load_weights", refuse)
    runner._loaded.clear()
