"""Running experiments/generate.py as a user does, in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(*overrides: str, cwd: Path | None = None, check: bool = True, env: dict | None = None,
             multirun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "experiments" / "generate.py")] + (["-m"] if multirun else []) + list(overrides)
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd or ROOT, env=e, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"generate failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def with_(request: dict, **changes) -> dict:
    """A deep copy of a request dict with dotted keys changed: ``with_(r, **{"model.path": p})``."""
    import copy

    r = copy.deepcopy(request)
    for key, value in changes.items():
        node = r
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return r


def cogvideox_conditioned_frames(folder, run_dir: Path, *extra: str):
    """frames.npy of a noise-free (vae.posterior=mode) CogVideoX run on a tiny reference checkpoint."""
    import numpy as np

    from tests.reference import cogvideox as ref
    generate(f"model.path={folder}", f"hydra.run.dir={run_dir}", f"height={ref.HEIGHT}", f"width={ref.WIDTH}",
             f"max_sequence_length={ref.MAX_SEQ}", "prompt=a cat walks on the grass", "negative_prompt=''",
             "seed=7", "runtime.progress=false", "vae.posterior=mode", *extra)
    return np.load(Path(run_dir) / "frames.npy")
