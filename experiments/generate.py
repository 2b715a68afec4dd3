"""Generate a video: `python experiments/generate.py [model=<preset>] [key=value ...]`; `-m` sweeps.

The Hydra config (conf/generate.yaml + conf/model/<preset>.yaml) is resolved to a plain dict and
handed to toolkit.runner.run, which checks it before any weights load and writes the run directory.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from toolkit.loading import CheckpointError  # noqa: E402
from toolkit.pipelines.common import RequestError  # noqa: E402

log = logging.getLogger("generate")


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from toolkit import runner

    request = OmegaConf.to_container(cfg, resolve=True)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        record = runner.run(request, run_dir)
    except (RequestError, CheckpointError) as e:
        log.error("%s", e)
        raise SystemExit(f"error: {e}") from None
    log.info("wrote %s to %s (%.1f s)", ", ".join(record["files"]), run_dir, record["timings_s"]["total"])


if __name__ == "__main__":
    main()
