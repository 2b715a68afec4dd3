"""Every preset and scheduler composes; keys are plain overridable values; mistakes are named."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from toolkit import runner

CONF = str(Path(__file__).resolve().parents[1] / "conf")
PRESETS = sorted(p.stem for p in Path(CONF, "model").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in Path(CONF, "scheduler").glob("*.yaml"))


def cfg(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return OmegaConf.to_container(compose("generate", overrides=list(overrides)), resolve=True)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_names_a_family_and_a_checkpoint(preset):
    c = cfg(f"model={preset}")
    assert c["model"]["family"] in runner.FAMILIES
    assert c["model"]["path"]
    assert c["model"]["dtype"] in ("float32", "float16", "bfloat16")
    assert isinstance(c["num_frames"], int) and isinstance(c["num_inference_steps"], int)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_composes_with_the_same_keys(name):
    c = cfg(f"scheduler={name}")
    assert set(c["scheduler"]) == set(cfg()["scheduler"])


def test_command_line_wins_over_the_preset():
    c = cfg("model=cogvideox_5b", "num_frames=13", "guidance_scale=2.5")
    assert (c["num_frames"], c["guidance_scale"], c["height"]) == (13, 2.5, 480)


def test_scheduler_key_override_reaches_the_request():
    c = cfg("scheduler=ddim", "scheduler.timestep_spacing=linspace", "scheduler.steps_offset=1")
    r = runner._family_request(c)
    assert r["scheduler"] == {"_class_name": "DDIMScheduler", "timestep_spacing": "linspace", "steps_offset": 1}


def test_unknown_key_is_refused_by_name():
    with pytest.raises(ConfigCompositionException, match="guidnce_scale"):
        cfg("guidnce_scale=3")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigCompositionException, match="cogvideox_5b"):
        cfg("model=cogvideox_9b")


def test_unknown_scheduler_lists_the_schedulers():
    with pytest.raises(ConfigCompositionException, match="ddim"):
        cfg("scheduler=heun")


def test_default_config_is_the_embedded_model():
    assert cfg()["model"]["path"].startswith(runner.EMBEDDED_PREFIX)
