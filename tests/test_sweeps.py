"""Sweeps through the command line: a real 2x2 multirun, resumption, reuse of the model and the
prompt embeddings, the gallery, wandb offline files, and an external launcher."""
import csv
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from experiments import report
from tests.cli import generate

TINY = ("num_frames=9", "height=32", "width=48", "num_inference_steps=2", "runtime.progress=false")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """guidance_scale x seed, 2x2, in one process (Hydra's basic launcher)."""
    d = tmp_path_factory.mktemp("sweep")
    proc = generate("guidance_scale=4,7", "seed=0,1", f"hydra.sweep.dir={d}", *TINY, multirun=True)
    return d, proc


def records(d):
    return [json.loads((d / str(i) / "run.json").read_text()) for i in range(4)]


@pytest.mark.slow
def test_every_run_of_the_product_leaves_a_complete_directory(sweep):
    d, _ = sweep
    for i, r in enumerate(records(d)):
        assert np.load(d / str(i) / "frames.npy").shape == (9, 32, 48, 3)
        assert (d / str(i) / "video.mp4").stat().st_size > 0
        assert set(r["metrics"]) >= {"temporal_change", "motion_px_per_frame", "sharpness", "brightness"}
    assert sorted((r["resolved"]["guidance_scale"], r["config"]["seed"]) for r in records(d)) == \
        [(4, 0), (4, 1), (7, 0), (7, 1)]


@pytest.mark.slow
def test_a_sweep_in_one_process_loads_once_and_encodes_each_prompt_once(sweep):
    d, _ = sweep
    rs = records(d)
    assert [r["reused"]["model"] for r in rs] == [False, True, True, True]
    assert sum(not r["reused"]["prompt_embeds"] for r in rs) == 1


@pytest.mark.slow
def test_rerunning_the_same_sweep_skips_complete_runs(sweep):
    d, _ = sweep
    before = [(d / str(i) / "run.json").stat().st_mtime_ns for i in range(4)]
    proc = generate("guidance_scale=4,7", "seed=0,1", f"hydra.sweep.dir={d}", *TINY, multirun=True)
    assert proc.stdout.count("complete already, skipped") + proc.stderr.count("complete already, skipped") == 4
    assert [(d / str(i) / "run.json").stat().st_mtime_ns for i in range(4)] == before


@pytest.mark.slow
def test_gallery_has_a_cell_per_run_and_a_sheet_of_matching_size(sweep, tmp_path):
    from PIL import Image
    d, _ = sweep
    info = report.report(d, tmp_path, n_frames=3)
    assert info["axes"] == ["guidance_scale", "seed"] and (info["rows"], info["cols"]) == (2, 2)

    class Videos(HTMLParser):
        srcs = []

        def handle_starttag(self, tag, attrs):
            if tag == "video":
                self.srcs.append(dict(attrs)["src"])
    parser = Videos()
    parser.feed((tmp_path / "gallery.html").read_text())
    assert len(parser.srcs) == 4 and all((tmp_path / s).exists() for s in parser.srcs)
    assert Image.open(tmp_path / "contact_sheet.png").size == report.contact_sheet_size(2, 2, 3, 48 / 32)
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["guidance_scale"] for r in rows} == {"4", "7"}
    assert all(float(r["temporal_change"]) >= 0 for r in rows)


def test_report_of_a_directory_without_runs_is_an_error(tmp_path):
    with pytest.raises(report.ReportError, match="holds no runs"):
        report.report(tmp_path)


@pytest.mark.slow
def test_wandb_logger_writes_offline_files_into_the_run(tmp_path):
    pytest.importorskip("wandb")
    generate("logger=wandb", f"hydra.run.dir={tmp_path}", *TINY, env={"WANDB_MODE": "offline"})
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep_in_subprocesses(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    generate("hydra/launcher=submitit_local", "seed=0,1", f"hydra.sweep.dir={tmp_path}", *TINY, multirun=True)
    assert all((tmp_path / str(i) / "run.json").exists() for i in range(2))


def test_sweep_value_of_the_wrong_type_is_named(tmp_path):
    proc = generate("guidance_scale=abc", f"hydra.run.dir={tmp_path}", *TINY, check=False)
    assert proc.returncode != 0 and "guidance_scale='abc': must be a number" in proc.stderr + proc.stdout


def test_unknown_negative_prompt_name_lists_the_library(tmp_path):
    proc = generate("negative_prompt=ugliness", f"hydra.run.dir={tmp_path}", *TINY, check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "negative_prompt='ugliness'" in out and "quality" in out and "motion" in out


def test_named_experiments_compose():
    from hydra import compose, initialize_config_dir
    from pathlib import Path
    conf = Path(__file__).resolve().parents[1] / "conf"
    for exp in sorted(p.stem for p in (conf / "experiment").glob("*.yaml")):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("generate", overrides=[f"+experiment={exp}"], return_hydra_config=True)
        assert cfg.hydra.sweeper.params, exp


def test_progress_bar_and_job_log_stay_on_separate_lines(tmp_path):
    import os
    import subprocess
    import sys

    from tests.cli import ROOT
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "generate.py"), "num_frames=9", "height=32",
                           "width=48", "num_inference_steps=2", f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    lines = proc.stdout.replace("\r", "\n").splitlines()
    assert any("denoising: 100%" in line for line in lines)
    logged = [line for line in lines if "[generate][INFO]" in line]
    assert logged and all(line.startswith("[") for line in logged), logged
