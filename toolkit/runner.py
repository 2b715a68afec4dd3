"""One generation run from a plain request dict (what the Hydra config resolves to), writing the run
directory: ``frames.npy``, ``video.mp4`` (and ``video.gif``), ``run.json``.

No Hydra here: ``experiments/generate.py`` resolves the config and calls ``run``; a notebook can call
it with a dict. Checks run before any weights load; outputs are written atomically, ``run.json`` last,
so a run directory with ``run.json`` is complete.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

import toolkit
from toolkit import io as tio
from toolkit import loading, metrics
from toolkit.pipelines.common import RequestError, Timer, check_choice

log = logging.getLogger(__name__)

FAMILIES = {"cogvideox": "toolkit.pipelines.cogvideox", "animatediff": "toolkit.pipelines.animatediff",
            "svd": "toolkit.pipelines.svd"}
EMBEDDED_PREFIX = "embedded:"
_loaded: dict = {}  # (family, folders, dtype, variant, jit) -> the loaded model, reused across runs in a process
_load_count = [0]  # models loaded by this process (a sweep in one process loads once)


def family_module(name: str):
    check_choice("model.family", name, FAMILIES)
    return importlib.import_module(FAMILIES[name])


def resolve_model_path(model: dict, configs_only: bool = False, components=None) -> Path:
    path = model.get("path")
    if path is None:
        raise RequestError("model.path=None: give a local folder, a hub repo id, or embedded:<name>")
    path = str(path)
    if path.startswith(EMBEDDED_PREFIX):
        from toolkit import embedded

        return embedded.ensure(path[len(EMBEDDED_PREFIX):])
    allow, ignore = loading.hub_patterns(components, model.get("variant"), configs_only)
    return loading.resolve_checkpoint(path, model.get("revision"), allow_patterns=allow, ignore_patterns=ignore)


def compute_dtype(name: str):
    """The MindSpore dtype to compute in. On CPU that is float32 whatever the checkpoint stores: there are
    no bf16 matmul/conv kernels, and fp16 runs no faster than fp32 while losing precision (the networks'
    parameters are float32; half-precision weights are upcast on load). Logged, and recorded in run.json."""
    import mindspore as ms

    check_choice("model.dtype", name, loading.DTYPES)
    if name != "float32" and ms.get_context("device_target") == "CPU":
        log.warning("model.dtype=%s: computing in float32 on CPU (weights upcast on load)", name)
        return ms.float32, "float32"
    return loading.DTYPES[name], name


def check_output(out: dict) -> None:
    fps = out.get("fps", 8)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
        raise RequestError(f"output.fps={fps!r}: must be a positive number")


def extra_checkpoints(fam, model: dict, configs_only: bool = False) -> dict:
    """Folders of the further checkpoints a family combines with the main one (e.g. AnimateDiff's
    ``model.motion_adapter``), named by the family's ``EXTRA_CHECKPOINTS``."""
    extras = {}
    for key in getattr(fam, "EXTRA_CHECKPOINTS", ()):
        if not model.get(key):
            raise RequestError(f"model.{key}=None: this family needs it (a local folder or a hub repo id)")
        extras[key] = resolve_model_path({"path": model[key], "revision": model.get(f"{key}_revision"),
                                          "variant": model.get(f"{key}_variant")}, configs_only)
    return extras


RUNTIME_SWITCHES = ("jit", "launch_blocking", "batch_guidance", "progress")  # runtime.* keys: true or false


def runtime_switch(request: dict, key: str):
    """The request's ``runtime.<key>``; every switch is on unless set (as conf/generate.yaml has them)."""
    return (request.get("runtime") or {}).get(key, True)


def prepare(request: dict):
    """Resolve the checkpoint's configs and check the request: everything that can fail before loading."""
    model = request["model"]
    fam = family_module(model.get("family"))
    check_choice("model.dtype", model.get("dtype", "float32"), loading.DTYPES)
    check_output(request.get("output") or {})
    check_choice("vae.posterior", (request.get("vae") or {}).get("posterior", "sample"), ["sample", "mode"])
    for key in RUNTIME_SWITCHES:
        check_choice(f"runtime.{key}", runtime_switch(request, key), [True, False])
    folder = resolve_model_path(model, configs_only=True, components=getattr(fam, "COMPONENTS", None))
    configs = fam.read_configs(folder, **extra_checkpoints(fam, model, configs_only=True))
    checked = fam.check_request(_family_request(request), configs)
    return fam, configs, checked


def _family_request(request: dict) -> dict:
    r = {k: v for k, v in request.items() if k not in ("model", "output", "runtime", "logger", "vae", "hydra")}
    r["batch_guidance"] = bool(runtime_switch(request, "batch_guidance"))
    vae = request.get("vae") or {}
    r["vae_posterior"] = vae.get("posterior", "sample")
    r["vae_tiling"] = {"enabled": bool(vae.get("tiling")),
                       **{k: v for k, v in vae.items() if k.startswith("tile_")}}
    sched = dict(request.get("scheduler") or {})
    name = sched.pop("name", None)
    r["scheduler"] = {**({"_class_name": name} if name else {}), **{k: v for k, v in sched.items() if v is not None}}
    return r


def load_model(fam, request: dict):
    model = request["model"]
    dtype, dtype_name = compute_dtype(model.get("dtype", "float32"))
    jit = bool(runtime_switch(request, "jit"))
    folder = resolve_model_path(model, components=getattr(fam, "COMPONENTS", None))
    extras = extra_checkpoints(fam, model)
    key = (fam.__name__, str(folder), dtype_name, model.get("variant"), jit, tuple(sorted(extras.items())))
    if key not in _loaded:
        _loaded.clear()  # one model in memory at a time
        _loaded[key] = fam.load(folder, dtype=dtype, variant=model.get("variant"), jit=jit, **extras)
        _load_count[0] += 1
    return _loaded[key], dtype_name


NOT_OUTPUT_KEYS = ("hydra", "logger")  # keys that do not change a run's outputs
NOT_OUTPUT_SUBKEYS = {"runtime": ("progress",)}


def config_hash(request: dict) -> str:
    """Hash of everything in the request that can change the outputs: two runs with the same hash
    produce the same files, so a complete one need not run again."""
    r = {k: v for k, v in request.items() if k not in NOT_OUTPUT_KEYS}
    for key, subs in NOT_OUTPUT_SUBKEYS.items():
        if isinstance(r.get(key), dict):
            r[key] = {k: v for k, v in r[key].items() if k not in subs}
    blob = json.dumps(r, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def completed_record(run_dir: Path, digest: str) -> dict | None:
    """The run.json of a complete run with this config hash in ``run_dir``, if there is one."""
    try:
        record = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("config_hash") != digest:
        return None
    if not all((Path(run_dir) / f).exists() for f in record.get("files", [])):
        return None
    return record


class OutOfMemory(MemoryError):
    """MindSpore could not allocate memory for a run; the message says which settings need less."""


def out_of_memory_hint(request: dict, resolved: dict, vae_tiling: bool = True) -> str:
    """What to change when a run does not fit in memory. Measured (24 GB machine, README Performance): at real
    sizes a compiled denoiser step holds ~3x the activations of an eager one (AnimateDiff at 512x512, 4 frames:
    9.5 vs 2.9 GB), and AnimateDiff's 16 frames at 512x512 run eagerly in 17.6 GB where compiled they do not fit;
    guidance's passes one after the other hold less than one batch of both (SVD at 576x1024, 2 frames, eager:
    1.8 vs 2.65 GB); a decode's memory follows the frames decoded at a time (``decode_chunk_size``, where the family
    has it) or the tile size (``vae.tiling``, where the family's VAE has a tiled mode: ``vae_tiling``)."""
    tries = []
    if runtime_switch(request, "jit"):
        tries.append("runtime.jit=false (at real sizes eager steps hold ~3x less memory, and may run slower)")
    if runtime_switch(request, "batch_guidance"):
        tries.append("runtime.batch_guidance=false (guidance's two passes one after the other)")
    tries += ["fewer num_frames", "a smaller height/width"]
    chunk = resolved.get("decode_chunk_size")
    if chunk is not None and chunk > 1:
        tries.append(f"decode_chunk_size={max(1, chunk // 2)} or less (frames decoded at a time)")
    if vae_tiling and not (resolved.get("vae_tiling") or {}).get("enabled"):
        tries.append("vae.tiling=true for the decode")
    size = ", ".join(f"{k}={resolved.get(k, request.get(k))}" for k in ("num_frames", "height", "width"))
    return f"out of memory at {size}: try {', '.join(tries[:-1])}, or {tries[-1]}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(request: dict, run_dir: str | Path, callback=None, resume: bool = True) -> dict:
    """Generate and write the run directory; returns the run record (also written as run.json).

    With ``resume``, a run directory that already holds the complete outputs of the same config (same
    ``config_hash``) is not run again: its record is returned with ``"skipped": True``.
    """
    run_dir = Path(run_dir)
    digest = config_hash(request)
    if resume:
        done = completed_record(run_dir, digest)
        if done is not None:
            log.info("skipping %s: complete outputs of the same config (hash %s)", run_dir, digest)
            return {**done, "skipped": True}
    timer = Timer()
    start = time.perf_counter()
    with timer("check"):
        fam, configs, checked = prepare(request)
    loads_before = _load_count[0]
    with timer("load"):
        model, dtype_name = load_model(fam, request)
    embeds_before = len(getattr(model, "embed_cache", {}))
    rng = np.random.Generator(np.random.PCG64(int(request.get("seed", 0))))
    steps = []

    def on_step(rec):
        steps.append({"i": rec.i, "t": rec.t, "guidance_scale": rec.guidance_scale, "seconds": rec.seconds})
        if callback is not None:
            callback(rec)

    try:
        frames = fam.generate(model, checked, rng, timer=timer, callback=on_step,
                              progress=bool(runtime_switch(request, "progress")))
    except RuntimeError as e:
        if "Memory not enough" not in str(e):
            raise
        raise OutOfMemory(out_of_memory_hint(request, checked, getattr(fam, "VAE_TILING", True))) from e
    reused = {"model": _load_count[0] == loads_before,
              "prompt_embeds": len(getattr(model, "embed_cache", {})) == embeds_before}
    with timer("metrics"):
        video_scores = [metrics.video_metrics(v) for v in frames]
    out = request.get("output") or {}
    fps = out.get("fps", 8)
    files = []
    with timer("write"):
        for b, video in enumerate(frames):
            suffix = "" if len(frames) == 1 else f"_{b}"
            if out.get("frames", True):
                files.append(tio.save_npy(run_dir / f"frames{suffix}.npy", video).name)
            if out.get("video", True):
                files.append(tio.export_to_video(video, run_dir / f"video{suffix}.mp4", fps=fps).name)
            if out.get("gif", False):
                files.append(tio.export_to_gif(video, run_dir / f"video{suffix}.gif", fps=fps).name)
    record = {
        "config": request,
        "resolved": {k: v for k, v in checked.items() if not isinstance(v, np.ndarray)},
        "model_folder": str(resolve_model_path(request["model"], configs_only=True)),
        "compute_dtype": dtype_name,
        "config_hash": digest,
        "frames_shape": list(frames.shape[1:]),
        "metrics": video_scores[0] if len(video_scores) == 1 else video_scores,
        "reused": reused,
        "files": files,
        "timings_s": {**timer.seconds, "total": time.perf_counter() - start},
        "steps": steps,
        "peak_rss_mb": peak_rss_mb(),
        "toolkit_version": toolkit.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "pid": os.getpid(),
    }
    tio.save_json(run_dir / "run.json", record)
    return record
