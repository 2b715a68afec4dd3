"""Shared fixtures. Reference checkpoints are built by diffusers into a per-session temp folder;
tests that need them skip with a reason when torch/diffusers are not installed."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


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
