# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Quickstart: one video, then a small guidance sweep, from Python
#
# The notebook composes its config exactly as `experiments/generate.py` does (Hydra's compose API on
# `conf/`) and calls the same `toolkit.runner.run`. Open it with `jupytext --to notebook` or run it as a
# script. `QUICK=1` (the tests set it) shrinks everything.

# %%
import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from toolkit import runner

ROOT = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd().parent
QUICK = os.environ.get("QUICK") == "1"
OUT = Path(os.environ.get("NOTEBOOK_OUT", ROOT / "outputs" / "notebook"))


def request(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


tiny = ["num_inference_steps=2", "height=32", "width=48", "runtime.progress=false"] if QUICK else []

# %% [markdown]
# ## One video from the embedded default (random weights: the picture is noise)

# %%
record = runner.run(request(*tiny, "seed=0"), OUT / "single")
print(record["files"], {k: round(v, 2) for k, v in record["timings_s"].items()})

# %% [markdown]
# ## A guidance sweep in one process: the model loads once

# %%
rows = []
for g in (1.0, 6.0):
    rec = runner.run(request(*tiny, f"guidance_scale={g}"), OUT / f"guidance_{g}")
    rows.append((g, rec["reused"]["model"], round(rec["metrics"]["temporal_change"], 4)))
print("guidance, model reused, temporal change:", rows)
assert rows[-1][1], "the second run reuses the loaded model"
