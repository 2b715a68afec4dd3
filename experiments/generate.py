"""Generate a video: `python experiments/generate.py [model=<preset>] [key=value ...]`; `-m` sweeps.

The Hydra config (conf/generate.yaml + conf/model/<preset>.yaml + ...) is resolved to a plain dict and
handed to toolkit.runner.run, which checks it before any weights load and writes the run directory.
Within one process (Hydra's default launcher) a sweep loads the model once and encodes each distinct
prompt once; a run directory that already holds the complete outputs of the same config is skipped.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from experiments.tracking import make_logger, resolve_negative_prompt  # noqa: E402
from toolkit.loading import CheckpointError  # noqa: E402
from toolkit.pipelines.common import RequestError  # noqa: E402

log = logging.getLogger("generate")


def apply_runtime(runtime: dict) -> None:
    """Process-wide MindSpore settings, applied once here at the edge (never inside toolkit/)."""
    import mindspore as ms

    if runtime.get("launch_blocking", True):
        ms.runtime.launch_blocking()


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from toolkit import runner

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    sweep_dir = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    request = OmegaConf.to_container(cfg, resolve=True)
    apply_runtime(request.get("runtime") or {})
    tracker = None
    try:
        request["negative_prompt"] = resolve_negative_prompt(request.get("negative_prompt"))
        tracker = make_logger(request.get("logger"), request, run_dir, sweep_dir)
        with logging_redirect_tqdm():
            record = runner.run(request, run_dir)
        if record.get("skipped"):
            log.info("complete already, skipped: %s", run_dir)
        else:
            tracker.log_run(record, run_dir)
            log.info("wrote %s to %s (%.1f s)", ", ".join(record["files"]), run_dir, record["timings_s"]["total"])
    except (RequestError, CheckpointError, runner.OutOfMemory) as e:
        log.error("%s", e)
        raise SystemExit(f"error: {e}") from None
    finally:
        if tracker is not None:
            tracker.close()


if __name__ == "__main__":
    main()
