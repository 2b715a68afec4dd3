"""What the entry points add around toolkit.runner: the named negative-prompt library of conf/negative/
and experiment trackers (wandb, imported only when chosen). Hydra and wandb live here, not in toolkit/."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from toolkit.pipelines.common import RequestError

CONF = Path(__file__).resolve().parents[1] / "conf"
NAME = re.compile(r"[a-z][a-z0-9_]*")
log = logging.getLogger(__name__)


def negative_library() -> dict[str, str]:
    return {p.stem: str(OmegaConf.load(p).text) for p in sorted((CONF / "negative").glob("*.yaml"))}


def resolve_negative_prompt(value):
    """A single lower-case word names a prompt of conf/negative/ (and must be one); any other text is
    the negative prompt itself. Lists are resolved element by element."""
    if isinstance(value, (list, tuple)):
        return [resolve_negative_prompt(v) for v in value]
    if not isinstance(value, str) or not NAME.fullmatch(value):
        return value
    library = negative_library()
    if value not in library:
        raise RequestError(
            f"negative_prompt={value!r}: a single word is read as a name from conf/negative/ "
            f"(allowed: {', '.join(library)}); add conf/negative/{value}.yaml, or write the text with "
            f"punctuation (e.g. '{value},')")
    return library[value]


class NoLogger:
    def log_run(self, record: dict, run_dir: Path) -> None:
        pass

    def close(self) -> None:
        pass


class WandbLogger:
    """One wandb run per generation run: config, scalars, the video by file path, a table row."""

    def __init__(self, cfg: dict, request: dict, run_dir: Path, sweep_dir: str | None):
        try:
            import wandb
        except ImportError:
            raise RequestError("logger=wandb: wandb is not installed (pip install -e '.[wandb]')") from None
        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or cfg.get("mode") or "offline"
        self.run = wandb.init(project=cfg.get("project"), entity=cfg.get("entity"), mode=mode,
                              dir=str(run_dir), config=request, group=cfg.get("group") or sweep_dir,
                              tags=list(cfg.get("tags") or []), name=Path(run_dir).name, reinit="finish_previous",
                              settings=wandb.Settings(silent=True, console="off"))

    def log_run(self, record: dict, run_dir: Path) -> None:
        scalars = {f"time/{k}": v for k, v in record["timings_s"].items()}
        scalars["memory/peak_rss_mb"] = record["peak_rss_mb"]
        m = record.get("metrics") or {}
        for k, v in (m.items() if isinstance(m, dict) else m[0].items()):
            scalars[f"metrics/{k}"] = v
        payload = dict(scalars)
        videos = [f for f in record["files"] if f.endswith(".mp4")]
        if videos:
            payload["video"] = self.wandb.Video(str(Path(run_dir) / videos[0]), format="mp4")
        columns = ["run_dir", "config_hash"] + sorted(scalars)
        payload["runs"] = self.wandb.Table(columns=columns, data=[[str(run_dir), record["config_hash"]]
                                                                 + [scalars[c] for c in sorted(scalars)]])
        self.run.log(payload)

    def close(self) -> None:
        self.run.finish()


def make_logger(cfg: dict, request: dict, run_dir: Path, sweep_dir: str | None = None):
    name = (cfg or {}).get("name", "none")
    if name == "none":
        return NoLogger()
    if name == "wandb":
        return WandbLogger(cfg, request, run_dir, sweep_dir)
    raise RequestError(f"logger.name={name!r}: unknown logger (allowed: none, wandb)")
