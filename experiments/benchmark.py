"""Benchmark the toolkit against diffusers/PyTorch, side by side in one process: `python experiments/benchmark.py`.

diffusers writes a small random-weight CogVideoX checkpoint; both implementations load that same folder
and do the same work, interleaved rep by rep (ours, reference, ours, ...), each timed call after a short pause
(SETTLE_SECONDS) that lets the other library's worker threads go idle. Reported: min and median
seconds of each, and ratio = ours_min / reference_min. Peak memory is measured in child processes (RSS
high-water marks cannot be reset within a process). Results are written to BENCHMARKS.md.
Needs the test extra (torch, diffusers).
"""
from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import platform
import queue
import re
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_checkpoint(cfg: dict, folder: Path):
    """The benchmark checkpoint, written by diffusers (the reference) from the config's sizes."""
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, \
        CogVideoXTransformer3DModel
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from tests.reference.cogvideox import SCHEDULER_KW
    from toolkit.tiny_tokenizers import write_tiny_t5_tokenizer

    torch.manual_seed(0)
    t, v, te = cfg["transformer"], cfg["vae"], cfg["text_encoder"]
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=t["num_attention_heads"], attention_head_dim=t["attention_head_dim"], in_channels=16,
        out_channels=16, time_embed_dim=t["time_embed_dim"], text_embed_dim=t["text_embed_dim"],
        num_layers=t["num_layers"], sample_width=cfg["width"] // 8, sample_height=cfg["height"] // 8,
        sample_frames=cfg["num_frames"], patch_size=2, max_text_seq_length=32,
        use_rotary_positional_embeddings=True)
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=tuple(v["block_out_channels"]), latent_channels=16,
        layers_per_block=v["layers_per_block"], norm_num_groups=v["norm_num_groups"],
        sample_height=cfg["height"], sample_width=cfg["width"])
    vocab = write_tiny_t5_tokenizer(folder / "tokenizer")
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=vocab, d_model=te["d_model"], d_kv=te["d_model"] // 4, d_ff=2 * te["d_model"],
        num_layers=te["num_layers"], num_heads=4, feed_forward_proj="gated-gelu", is_encoder_decoder=False))
    # the text encoder's width must be the transformer's text_embed_dim
    assert te["d_model"] == t["text_embed_dim"], "text_encoder.d_model must equal transformer.text_embed_dim"
    pipe = CogVideoXPipeline(tokenizer=AutoTokenizer.from_pretrained(str(folder / "tokenizer")),
                             text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler(**SCHEDULER_KW))
    pipe.save_pretrained(str(folder))
    return CogVideoXPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, name, ours, ref, note=""):
        row = {"stage": name, "ours_min": min(ours), "ours_median": statistics.median(ours),
               "ref_min": min(ref) if ref else None, "ref_median": statistics.median(ref) if ref else None,
               "note": note}
        row["ratio"] = row["ours_min"] / row["ref_min"] if ref else None
        self.rows.append(row)
        ratio = f"{row['ratio']:.2f}x" if ref else "-"
        print(f"{name:42s} ours {row['ours_min']:.4f}s  ref {row['ref_min'] or 0:.4f}s  {ratio}", flush=True)


# Both libraries' worker threads keep spinning after their work (MindSpore's for ~150 ms): a call started right
# after the other library's runs on contended cores. Measured on the CogVideoX step: back to back, ours 41.6 ms vs
# 34.8 ms in a block of its own (the reference 35.9 vs 34.7 ms); with a 50-500 ms pause before every call both
# ran at their block-of-their-own speed. Real runs use one library, so every timed call starts after this pause.
SETTLE_SECONDS = 0.2


def settled(fn):
    """fn() after the pause that lets the other library's threads go idle (see SETTLE_SECONDS)."""
    time.sleep(SETTLE_SECONDS)
    return fn()


def timed(fn):
    """Seconds fn() takes, started after the pause (see SETTLE_SECONDS)."""
    def run():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return settled(run)


def interleaved(ours, ref, repeats: int, warmup: int = 1):
    for _ in range(warmup):
        ours()
        if ref:
            ref()
    gc.collect()  # no collection of earlier rows' garbage inside a timed call (see Notes)
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(ours))
        if ref:
            b.append(timed(ref))
    return a, b


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms by a thread (ru_maxrss cannot be
    reset, and an earlier spike, e.g. during import, would hide the measured one)."""

    def __enter__(self):
        import threading

        import psutil
        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.base = self.proc.memory_info().rss

        def watch():
            while not self.stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss)
                self.stop.wait(0.002)
        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mb = (self.peak - self.base) / 2**20


def _child_decode(folder: str, frames: int, tiled: bool, reference: bool, out):
    """Child process: its peak RSS (the kernel's high-water mark, MB) after loading the VAE and decoding
    ``frames`` frames (none: 0), ours or diffusers'."""
    import numpy as np
    tile = dict(tile_sample_min_height=48, tile_sample_min_width=40)
    if reference:
        import torch
        from diffusers import AutoencoderKLCogVideoX as Ref
        torch.set_grad_enabled(False)
        vae = Ref.from_pretrained(folder, subfolder="vae").eval()
        cfg = vae.config
        if tiled:
            vae.enable_tiling(**tile)
        decode = lambda z: vae.decode(torch.from_numpy(z)).sample.numpy()  # noqa: E731
    else:
        import mindspore as ms
        ms.runtime.launch_blocking()
        from toolkit import loading
        from toolkit.models.cogvideox.vae import AutoencoderKLCogVideoX
        vae, cfg = loading.build_and_load(AutoencoderKLCogVideoX, Path(folder), "vae")
        decode = lambda z: (vae.decode_tiled(ms.Tensor(z), **tile) if tiled  # noqa: E731
                            else vae.decode(ms.Tensor(z))).asnumpy()
    if frames:
        lat = (frames - 1) // 4 + 1
        h, w = cfg["sample_height"] // 8, cfg["sample_width"] // 8
        decode(np.random.default_rng(0).standard_normal((1, 16, lat, h, w)).astype(np.float32))
    # VmHWM, not getrusage's ru_maxrss: a spawned child inherits its parent's ru_maxrss across exec
    status = Path("/proc/self/status").read_text().splitlines()
    out.put(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def decode_memory(folder: Path, frames: tuple, repeats: int) -> list[tuple[str, str]]:
    """Memory-table rows, untiled and tiled: the peak memory a VAE decode adds to a process that has loaded the
    VAE, at ``frames[0]`` and ``frames[1]`` frames, ours and diffusers'. Each is the kernel's exact high-water
    mark of a fresh process that decodes, minus that of one that only loads (measured once per implementation;
    a delta sampled within one process varied by 20-40% with the allocator's state); the minimum over
    ``repeats`` processes."""
    def peak(f, tiled, reference):
        return min(in_child(_child_decode, str(folder), f, tiled, reference) for _ in range(repeats))
    base = {ref: peak(0, False, ref) for ref in (False, True)}
    rows = []
    for tiled in (False, True):
        (a, b), (c, d) = ([peak(f, tiled, ref) - base[ref] for f in frames] for ref in (False, True))
        rows.append((f"VAE decode {'tiled' if tiled else 'untiled'}: peak memory of the decode, {frames[0]} -> "
                     f"{frames[1]} frames, ours / diffusers (min of {repeats} processes)",
                     f"{a:.0f} MB -> {b:.0f} MB ({b / max(a, 1e-9):.2f}x) / {c:.0f} MB -> {d:.0f} MB "
                     f"({d / max(c, 1e-9):.2f}x)"))
    return rows


def _child_svd_decode(folder: str, frames: int, chunk: int, out):
    """Child process: peak RSS growth of SVD's chunked temporal decode (ours), chunk by chunk as the
    pipeline decodes (the decoded frames themselves, kept on the host, are counted too)."""
    import mindspore as ms
    import numpy as np
    ms.runtime.launch_blocking()
    from toolkit import loading
    from toolkit.models.svd.vae import AutoencoderKLTemporalDecoder
    vae, _ = loading.build_and_load(AutoencoderKLTemporalDecoder, Path(folder), "vae")
    z = np.random.default_rng(0).standard_normal((frames, 4, 32, 32)).astype(np.float32)
    vae.decode(ms.Tensor(z[:1]), 1).asnumpy()
    with PeakRSS() as m:
        parts = [vae.decode(ms.Tensor(z[i:i + chunk]), len(z[i:i + chunk])).asnumpy()
                 for i in range(0, frames, chunk)]
        np.concatenate(parts)
    out.put(m.mb)


def _child_attention(shape: tuple, reference: bool, out):
    """Child process: peak RSS growth (the first call, ours compiling included) and the time of a second call of
    one softmax attention on (B, H, S, D) -- ours compiled, or PyTorch's fused scaled_dot_product_attention."""
    import time

    import numpy as np
    q, k, v = (np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(3))
    if reference:
        import torch
        torch.set_grad_enabled(False)
        args = tuple(map(torch.from_numpy, (q, k, v)))
        attend = lambda: torch.nn.functional.scaled_dot_product_attention(*args).numpy()  # noqa: E731
    else:
        import mindspore as ms
        ms.runtime.launch_blocking()
        from toolkit.models.layers import scaled_dot_product_attention
        compiled, args = ms.jit(scaled_dot_product_attention), tuple(map(ms.Tensor, (q, k, v)))
        attend = lambda: compiled(*args).asnumpy()  # noqa: E731
    del q, k, v
    with PeakRSS() as m:
        attend()
    start = time.perf_counter()
    attend()
    out.put((m.mb, time.perf_counter() - start))


def attention_memory(cfg: dict) -> list[tuple[str, str]]:
    """A memory-table row: one attention at a real model's largest sequence, ours against PyTorch's fused SDPA."""
    b, h, s, d = (cfg[k] for k in ("batch", "heads", "tokens", "head_dim"))
    (mb, sec), (ref_mb, ref_sec) = (in_child(_child_attention, (b, h, s, d), ref) for ref in (False, True))
    return [(f"attention over {s} tokens ({cfg['what']}: {b} x {h} heads x {d} dims; whole, its scores alone "
             f"would be {b * h * s * s * 4 / 2**30:.1f} GB): peak RSS growth and time, ours (compiled, in bands "
             f"of queries) / diffusers (PyTorch SDPA)",
             f"{mb:.0f} MB, {sec:.2f} s / {ref_mb:.0f} MB, {ref_sec:.2f} s")]


def _child_unet_memory(mode: str, frames: int, h: int, w: int, out):
    """Child process: peak RSS growth of the first CFG step (compiling included) of an SVD UNet of the real
    configuration with random weights -- ours compiled or eager, ours eager with guidance's two passes one after the
    other ("eager, passes apart", runtime.batch_guidance=false), or diffusers'; the weights are built before. Both
    classes' defaults are stable-video-diffusion-img2vid's UNet configuration; only num_frames is given."""
    import numpy as np
    rng = np.random.default_rng(0)
    arrays = (rng.standard_normal((2, frames, 8, h, w)).astype(np.float32), np.array([0.5, 0.5], np.float32),
              rng.standard_normal((2, 1, 1024)).astype(np.float32), np.array([[6.0, 127.0, 0.02]] * 2, np.float32))
    if mode == "diffusers":
        import torch
        from diffusers import UNetSpatioTemporalConditionModel as Ref
        torch.set_grad_enabled(False)
        net, args = Ref(num_frames=frames).eval(), [torch.from_numpy(a) for a in arrays]
        step = lambda: net(*args).sample.numpy()  # noqa: E731
    else:
        import mindspore as ms
        ms.runtime.launch_blocking()
        from toolkit.models.base import compile_network
        from toolkit.models.svd import UNetSpatioTemporalConditionModel as Ours
        net = Ours(num_frames=frames)
        forward = compile_network(net) if mode == "compiled" else net
        parts = [slice(0, 1), slice(1, 2)] if mode == "eager, passes apart" else [slice(0, 2)]
        passes = [[ms.Tensor(a[part]) for a in arrays] for part in parts]
        step = lambda: [forward(*args).asnumpy() for args in passes]  # noqa: E731
    with PeakRSS() as m:
        step()
    out.put(m.mb)


def unet_memory(cfg: dict) -> list[tuple[str, str]]:
    """A memory-table row: the first step of an SVD UNet of the real configuration, ours and diffusers'."""
    frames, (h, w) = cfg["frames"], cfg["latent"]
    modes = ("compiled", "eager", "eager, passes apart", "diffusers")
    mb = {mode: in_child(_child_unet_memory, mode, frames, h, w) for mode in modes}
    return [(f"SVD UNet of the real configuration (1.5 B parameters, random weights), first CFG step at "
             f"{8 * w}x{8 * h} x {frames} frames: peak RSS growth above the weights, ours compiled (compiling "
             f"included) / ours eager / ours eager with guidance's two passes one after the other "
             f"(runtime.batch_guidance=false) / diffusers (one batch)", " / ".join(f"{mb[m]:.0f} MB" for m in modes))]


def _child_load(folder: str, variant, reference: bool, out):
    """Child process: peak RSS growth while loading the transformer as float32 and reading every weight once
    (so lazily mapped pages are counted), ours or diffusers'."""
    if reference:
        import torch
        from diffusers import CogVideoXTransformer3DModel as Ref
        torch.set_grad_enabled(False)
        load = lambda: Ref.from_pretrained(folder, subfolder="transformer", variant=variant,  # noqa: E731
                                           torch_dtype=torch.float32).parameters()
        total = lambda params: sum(float(p.sum()) for p in params)  # noqa: E731
    else:
        import mindspore as ms
        import numpy as np
        ms.runtime.launch_blocking()
        (ms.Tensor(np.ones(4, np.float32)) + 1).asnumpy()  # the runtime's own first-op allocations
        from toolkit import loading
        from toolkit.models.cogvideox.transformer import CogVideoXTransformer3DModel
        load = lambda: loading.build_and_load(CogVideoXTransformer3DModel, Path(folder), "transformer",  # noqa: E731
                                              variant)[0].get_parameters()
        total = lambda params: sum(float(p.asnumpy().sum()) for p in params)  # noqa: E731
    with PeakRSS() as m:
        total(load())
    out.put(m.mb)


def load_memory(cfg: dict, run_dir: Path) -> list[tuple[str, str]]:
    """Peak RSS while loading a transformer big enough for the weights to dominate (written by diffusers in
    float32 and as an fp16 variant), ours and diffusers', as rows for the memory table."""
    import torch
    from diffusers import CogVideoXTransformer3DModel as Ref

    c = cfg["load_memory"]
    folder = run_dir / "load_memory"
    torch.manual_seed(0)
    ref = Ref(in_channels=16, out_channels=16, sample_height=30, sample_width=44, sample_frames=17, patch_size=2,
              max_text_seq_length=226, use_rotary_positional_embeddings=True,
              **{k: v for k, v in c.items() if k != "enabled"})
    ref.save_pretrained(str(folder / "transformer"))
    ref.to(torch.float16).save_pretrained(str(folder / "transformer"), variant="fp16")
    del ref
    fp32 = sum(p.stat().st_size for p in (folder / "transformer").glob("*.safetensors")
               if ".fp16." not in p.name) / 2**20
    rows = []
    for variant, label in ((None, "float32 file"), ("fp16", "fp16 file, upcast to float32")):
        ours, theirs = (in_child(_child_load, str(folder), variant, ref) for ref in (False, True))
        rows.append((f"load + read every weight, transformer of {fp32:.0f} MB in float32 ({label}): peak RSS "
                     "growth, ours / diffusers", f"{ours:.0f} MB ({ours / fp32:.2f}x the weights) / {theirs:.0f} MB "
                     f"({theirs / fp32:.2f}x)"))
    return rows


def _child(target, args):
    # `import mindspore` sets OMP_NUM_THREADS=1 in the C environment, which spawned processes inherit: PyTorch
    # would run single-threaded there (2x slower on 2 cores). The child starts without it, like the parent did.
    os.environ.pop("OMP_NUM_THREADS", None)
    target(*args)


def in_child(target, *args):
    """``target(*args, queue)`` in a fresh process; what it puts on the queue. Waits as long as the child lives (the
    rows at real widths take ~15 minutes, longer on a slower machine) and raises if it dies without a result."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(target, (*args, q)))
    p.start()
    while True:
        alive = p.is_alive()  # looked at before waiting: a child that had exited has put all it ever will
        try:
            value = q.get(timeout=5)
            break
        except queue.Empty:
            if not alive:
                raise RuntimeError(f"benchmark child {target.__name__} exited with code {p.exitcode} "
                                   "and no result") from None
    p.join()
    return value


def animatediff_rows(table: Table, run_dir: Path, repeats: int, steps: int) -> None:
    """AnimateDiff on the test suite's tiny checkpoint (an SD-format folder + a MotionAdapter, written by
    diffusers): load, text encoding, one CFG-batch motion-UNet step, the sampling loop, the VAE decode."""
    import mindspore as ms
    import numpy as np
    import torch
    from diffusers import AnimateDiffPipeline, MotionAdapter

    from tests.reference import animatediff as ad
    from toolkit.pipelines import animatediff
    from toolkit.pipelines.common import Timer

    base, adapter = run_dir / "animatediff" / "sd", run_dir / "animatediff" / "adapter"
    pipe = ad.build(base, adapter)
    name = f"AnimateDiff (tiny, {ad.NUM_FRAMES} frames at {ad.WIDTH}x{ad.HEIGHT})"
    table.add(f"{name}: load (all components)", *interleaved(
        lambda: animatediff.load(base, motion_adapter=adapter),
        lambda: AnimateDiffPipeline.from_pretrained(str(base), motion_adapter=MotionAdapter.from_pretrained(
            str(adapter))), repeats))
    model = animatediff.load(base, motion_adapter=adapter)
    prompt = "a cat walks on the grass"
    r = animatediff.check_request({"prompt": prompt, "negative_prompt": "", "num_frames": ad.NUM_FRAMES,
                                   "height": ad.HEIGHT, "width": ad.WIDTH, "num_inference_steps": steps,
                                   "guidance_scale": 7.5}, model.configs)

    def ours_text():
        model.embed_cache.clear()
        return animatediff.encode(model, r)
    table.add(f"{name}: text encoding (prompt + negative)",
              *interleaved(ours_text, lambda: pipe.encode_prompt(prompt, "cpu", 1, True, ""), repeats))

    rng = np.random.default_rng(0)
    x = rng.standard_normal(ad.latent_shape(pipe)).astype(np.float32)
    cond, uncond = animatediff.encode(model, r)
    ctx = np.concatenate([uncond, cond])
    args = (ms.Tensor(np.concatenate([x, x])), ms.Tensor(np.array([500.0, 500.0], np.float32)), ms.Tensor(ctx))
    # diffusers' motion UNet takes the text states repeated per frame, as AnimateDiffPipeline passes them
    tx = torch.from_numpy(np.concatenate([x, x]))
    tc, tt = torch.from_numpy(np.repeat(ctx, ad.NUM_FRAMES, 0)), torch.tensor(500)
    table.add(f"{name}: denoiser step (CFG batch 2)", *interleaved(
        lambda: model.forward(*args).asnumpy(), lambda: pipe.unet(tx, tt, encoder_hidden_states=tc).sample, repeats))

    def ours_loop():
        t = Timer()
        animatediff.generate(model, {**r, "latents": x}, np.random.default_rng(0), timer=t, progress=False)
        return t.seconds["denoise"]
    ours_loop()
    loops = [(settled(ours_loop), timed(lambda: pipe(prompt=prompt, negative_prompt="", num_frames=ad.NUM_FRAMES,
                                               height=ad.HEIGHT, width=ad.WIDTH, num_inference_steps=steps,
                                               guidance_scale=7.5, latents=torch.from_numpy(x),
                                               output_type="latent"))) for _ in range(repeats)]
    table.add(f"{name}: sampling loop ({steps} steps)", *map(list, zip(*loops)),
              "reference time includes its text encoding (measured above)")
    zt = torch.from_numpy(x)
    table.add(f"{name}: VAE decode", *interleaved(
        lambda: animatediff.decode(model, x, 16, {"enabled": False}), lambda: pipe.decode_latents(zt, 16), repeats))


def svd_rows(table: Table, run_dir: Path, repeats: int, steps: int) -> None:
    """Stable Video Diffusion on the test suite's tiny checkpoint (written by diffusers): load, image encoding
    (CLIP image embedding + VAE encode of the conditioning image), one CFG-batch UNet step, the sampling loop,
    the temporal VAE decode."""
    import mindspore as ms
    import numpy as np
    import torch
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    from tests.reference import svd as svd_ref
    from toolkit.pipelines import svd
    from toolkit.pipelines.common import Timer

    folder = run_dir / "svd_pipe"
    pipe = svd_ref.build(folder)
    name = f"SVD (tiny, {svd_ref.NUM_FRAMES} frames at {svd_ref.WIDTH}x{svd_ref.HEIGHT})"
    table.add(f"{name}: load (all components)", *interleaved(
        lambda: svd.load(folder), lambda: StableVideoDiffusionPipeline.from_pretrained(str(folder)), repeats))
    model = svd.load(folder)
    rng = np.random.default_rng(0)
    image = (rng.random((svd_ref.HEIGHT, svd_ref.WIDTH, 3)) * 255).astype(np.uint8)
    r = svd.check_request({"image": image, "height": svd_ref.HEIGHT, "width": svd_ref.WIDTH,
                           "num_frames": svd_ref.NUM_FRAMES, "num_inference_steps": steps, "fps": 7,
                           "motion_bucket_id": 127, "noise_aug_strength": 0.02}, model.configs)
    clip, pixels = r["clip_pixels"], r["image_pixels"][None]
    tclip, tpix = torch.from_numpy(clip), torch.from_numpy(pixels)

    def ours_image():
        model.embed_cache.clear()
        return svd.encode_image(model, clip, 1), svd.image_latents(model, pixels, 1, svd_ref.NUM_FRAMES)
    table.add(f"{name}: image encoding (CLIP embedding + VAE encode)", *interleaved(
        ours_image, lambda: (pipe.image_encoder(tclip).image_embeds, pipe.vae.encode(tpix).latent_dist.mode()),
        repeats))

    latents = rng.standard_normal(svd_ref.latent_shape(pipe)).astype(np.float32)
    f, c, h, w = latents.shape[1], pipe.unet.config.in_channels, *latents.shape[3:]
    x = rng.standard_normal((2, f, c, h, w)).astype(np.float32)  # [noisy | image] latents on channels
    emb = rng.standard_normal((2, 1, pipe.unet.config.cross_attention_dim)).astype(np.float32)
    ids = np.array([[6.0, 127.0, 0.02]] * 2, np.float32)
    args = (ms.Tensor(x), ms.Tensor(np.array([0.5, 0.5], np.float32)), ms.Tensor(emb), ms.Tensor(ids))
    tx, te, ti, tt = (torch.from_numpy(a) for a in (x, emb, ids, np.array([0.5, 0.5], np.float32)))
    table.add(f"{name}: denoiser step (CFG batch 2)", *interleaved(
        lambda: model.forward(*args).asnumpy(),
        lambda: pipe.unet(tx, tt, encoder_hidden_states=te, added_time_ids=ti).sample, repeats))

    def ours_loop():
        t = Timer()
        svd.generate(model, {**r, "latents": latents}, np.random.default_rng(0), timer=t, progress=False)
        return t.seconds["denoise"]

    def ref_loop():
        with svd_ref.numpy_noise(0):
            pipe(image=Image.fromarray(image), height=svd_ref.HEIGHT, width=svd_ref.WIDTH,
                 num_frames=f, num_inference_steps=steps, fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
                 latents=torch.from_numpy(latents), output_type="latent")
    ours_loop()
    loops = [(settled(ours_loop), timed(ref_loop)) for _ in range(repeats)]
    table.add(f"{name}: sampling loop ({steps} steps)", *map(list, zip(*loops)),
              "reference time includes its image encoding (measured above)")
    zt = torch.from_numpy(latents)
    table.add(f"{name}: VAE decode (temporal decoder, all frames in one chunk)", *interleaved(
        lambda: svd.decode(model, latents, f), lambda: pipe.decode_latents(zt, f, f), repeats))


def _child_wide_rows(cfg: dict, run_dir: str, out):
    """Child process: ``wide_rows`` in a fresh process, both sides. A process that has already run the other
    rows holds a larger, fragmented memory pool, which slowed our VAE decodes there by 10-15%."""
    import mindspore as ms
    import numpy as np
    import torch
    ms.runtime.launch_blocking()
    torch.set_grad_enabled(False)
    table = Table()
    wide_rows(table, cfg, Path(run_dir))
    unet_rows(table, cfg["wide"]["unet"], Path(run_dir) / "wide", cfg["wide"]["repeats"], np.random.default_rng(3))
    out.put([{**row, "torch_threads": torch.get_num_threads()} for row in table.rows])


def wide_rows(table: Table, cfg: dict, run_dir: Path) -> None:
    """The denoiser step and the VAE decode at the families' real widths (fewer layers, smaller videos), where
    the work is in large matrix products rather than in per-operator overhead."""
    import mindspore as ms
    import numpy as np
    import torch
    from types import SimpleNamespace

    from diffusers import AutoencoderKLCogVideoX as RefVAE
    from diffusers import CogVideoXPipeline
    from diffusers import CogVideoXTransformer3DModel as RefTransformer

    from toolkit import loading
    from toolkit.models.base import CompiledParts, compile_network
    from toolkit.models.cogvideox.transformer import CogVideoXTransformer3DModel, rotary_tables_for
    from toolkit.models.cogvideox.vae import AutoencoderKLCogVideoX

    w, repeats, rng = cfg["wide"], cfg["wide"]["repeats"], np.random.default_rng(2)
    t, (f, h, wd) = w["transformer"], w["latent"]
    torch.manual_seed(0)
    ref = RefTransformer(in_channels=16, out_channels=16, sample_height=h, sample_width=wd,
                         sample_frames=4 * (f - 1) + 1, patch_size=2, max_text_seq_length=w["text_tokens"],
                         use_rotary_positional_embeddings=True, **t).eval()
    ref.save_pretrained(str(run_dir / "wide" / "transformer"))
    net, config = loading.build_and_load(CogVideoXTransformer3DModel, run_dir / "wide", "transformer")
    forward = compile_network(net)
    x = rng.standard_normal((2, f, 16, h, wd)).astype(np.float32)
    text = rng.standard_normal((2, w["text_tokens"], t["text_embed_dim"])).astype(np.float32)
    steps = np.array([500.0, 500.0], np.float32)
    args = (ms.Tensor(x), ms.Tensor(text), ms.Tensor(steps), *rotary_tables_for(config, f, h, wd))
    like = SimpleNamespace(vae_scale_factor_spatial=8, transformer=ref)
    rotary = CogVideoXPipeline._prepare_rotary_positional_embeddings(like, 8 * h, 8 * wd, f, torch.device("cpu"))
    tx, tt, ts = torch.from_numpy(x), torch.from_numpy(text), torch.from_numpy(steps)
    tokens = f * (h // 2) * (wd // 2) + w["text_tokens"]
    width = t["num_attention_heads"] * t["attention_head_dim"]
    table.add(f"denoiser step at width {width} ({t['num_layers']} layers, {tokens} tokens, CFG batch 2)",
              *interleaved(lambda: forward(*args).asnumpy(),
                           lambda: ref(tx, tt, ts, image_rotary_emb=rotary, return_dict=False)[0], repeats))
    del ref, net

    v, (f, h, wd) = w["vae"], w["vae_latent"]
    torch.manual_seed(0)
    ref = RefVAE(down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
                 latent_channels=16, sample_height=8 * h, sample_width=8 * wd, **v).eval()
    ref.save_pretrained(str(run_dir / "wide" / "vae"))
    vae, _ = loading.build_and_load(AutoencoderKLCogVideoX, run_dir / "wide", "vae")
    z = rng.standard_normal((1, 16, f, h, wd)).astype(np.float32)
    zm, zt = ms.Tensor(z), torch.from_numpy(z)
    table.add(f"VAE decode at widths {list(v['block_out_channels'])}, untiled ({vae.num_frames(f)} frames at "
              f"{8 * wd}x{8 * h})", *interleaved(lambda: vae.decode(zm).asnumpy(), lambda: ref.decode(zt).sample,
                                                 repeats))

    # the UNet families' VAEs at Stable Diffusion's widths: SD's AutoencoderKL (AnimateDiff decodes frame by frame)
    # and SVD's temporal decoder
    from diffusers import AutoencoderKL as RefKL
    from diffusers import AutoencoderKLTemporalDecoder as RefTemporal

    from toolkit.models.sd.vae import AutoencoderKL
    from toolkit.models.svd.vae import AutoencoderKLTemporalDecoder
    from toolkit.pipelines import animatediff, svd

    u = w["unet_vae"]
    n, (h, wd) = u["frames"], u["latent"]
    z = rng.standard_normal((n, 4, h, wd)).astype(np.float32)
    zm, zt = ms.Tensor(z), torch.from_numpy(z)
    size = f"{n} frames at {8 * wd}x{8 * h}"
    common = dict(block_out_channels=tuple(u["block_out_channels"]), layers_per_block=u["layers_per_block"],
                  latent_channels=4, down_block_types=("DownEncoderBlock2D",) * len(u["block_out_channels"]))
    torch.manual_seed(0)
    ref = RefKL(up_block_types=("UpDecoderBlock2D",) * len(u["block_out_channels"]), norm_num_groups=32,
                **common).eval()
    ref.save_pretrained(str(run_dir / "wide" / "sd_vae"))
    vae, _ = loading.build_and_load(AutoencoderKL, run_dir / "wide", "sd_vae")
    # as the pipelines decode by default (runtime.jit=true): compiled, whole chunks while they fit one graph (else
    # AnimateDiff one frame per graph call, SVD in compiled parts); the warm-up repetition compiles
    decode = animatediff.frame_decoder(SimpleNamespace(vae=vae, decode_compiled=compile_network(vae)), h, wd)
    table.add(f"AnimateDiff: VAE decode at widths {list(u['block_out_channels'])} ({size})",
              *interleaved(lambda: decode(zm).asnumpy(), lambda: ref.decode(zt).sample, repeats))
    tile = u["tile_sample_min_size"]  # diffusers' tiling, at a tile size that splits the frame (its default: 512)
    ref.enable_tiling()
    ref.tile_sample_min_size, ref.tile_latent_min_size = tile, tile // 8
    table.add(f"AnimateDiff: VAE decode at widths {list(u['block_out_channels'])} ({size}), tiled ({tile} px tiles)",
              *interleaved(lambda: vae.decode_tiled(zm, tile, forward=decode).asnumpy(),
                           lambda: ref.decode(zt).sample, repeats))
    torch.manual_seed(0)
    ref = RefTemporal(**common).eval()
    ref.save_pretrained(str(run_dir / "wide" / "svd_vae"))
    vae, _ = loading.build_and_load(AutoencoderKLTemporalDecoder, run_dir / "wide", "svd_vae")
    decode = svd.chunk_decoder(SimpleNamespace(vae=vae, decode_compiled=compile_network(vae)), n, h, wd)
    table.add(f"SVD: VAE decode at widths {list(u['block_out_channels'])} ({size}, one chunk)",
              *interleaved(lambda: decode(zm, n).asnumpy(), lambda: ref.decode(zt, num_frames=n).sample,
                           repeats))
    # the route svd.chunk_decoder takes for chunks too large for one graph, on the same chunk
    in_parts = CompiledParts(vae.decoder.compiled_parts()).around(vae.decode)
    table.add(f"SVD: VAE decode at widths {list(u['block_out_channels'])} ({size}, in compiled parts, as real-size "
              "chunks decode)", *interleaved(lambda: in_parts(zm, n).asnumpy(),
                                             lambda: ref.decode(zt, num_frames=n).sample, repeats))


def unet_rows(table: Table, u: dict, folder: Path, repeats: int, rng) -> None:
    """One CFG-batch denoiser step of AnimateDiff's motion UNet (an SD 1.5 UNet + MotionAdapter) and of SVD's
    spatio-temporal UNet at their real widths (fewer resnets per block, a small video), both compiled as the
    pipelines run them."""
    import mindspore as ms
    import numpy as np
    import torch
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel, UNetSpatioTemporalConditionModel

    from toolkit import loading
    from toolkit.models.animatediff import load_motion_unet
    from toolkit.models.base import compile_network
    from toolkit.models.svd import UNetSpatioTemporalConditionModel as OurSVDUNet

    widths, n, (h, wd) = tuple(u["block_out_channels"]), u["frames"], u["latent"]
    size = (f"{len(widths)} levels {list(widths)}, {u['layers_per_block']} resnet per block, "
            f"{n} frames at {8 * wd}x{8 * h}")
    steps = np.array([500.0, 500.0], np.float32)

    torch.manual_seed(0)  # SD 1.5's UNet config (cross-attention 768, 8 heads), fewer resnets
    sd = UNet2DConditionModel(block_out_channels=widths, layers_per_block=u["layers_per_block"],
                              cross_attention_dim=768, attention_head_dim=8).eval()
    adapter = MotionAdapter(block_out_channels=widths, motion_layers_per_block=u["layers_per_block"],
                            motion_num_attention_heads=8, motion_max_seq_length=32).eval()
    sd.save_pretrained(str(folder / "sd_unet"))
    adapter.save_pretrained(str(folder / "adapter"))
    ref = UNetMotionModel.from_unet2d(sd, adapter).eval()
    del sd, adapter
    net, _ = load_motion_unet(folder / "sd_unet", folder / "adapter")
    forward = compile_network(net)
    x = rng.standard_normal((2, 4, n, h, wd)).astype(np.float32)
    ctx = rng.standard_normal((2, 77, 768)).astype(np.float32)
    args = (ms.Tensor(x), ms.Tensor(steps), ms.Tensor(ctx))
    tx, tc = torch.from_numpy(x), torch.from_numpy(np.repeat(ctx, n, 0))  # diffusers takes text per frame
    table.add(f"AnimateDiff: denoiser step at SD 1.5 widths ({size}, CFG batch 2)",
              *interleaved(lambda: forward(*args).asnumpy(),
                           lambda: ref(tx, torch.tensor(500), encoder_hidden_states=tc).sample, repeats))
    del ref, net, forward

    torch.manual_seed(0)  # SVD's UNet config (cross-attention 1024, 5/10/20/20 heads), fewer resnets
    ref = UNetSpatioTemporalConditionModel(block_out_channels=widths, layers_per_block=u["layers_per_block"],
                                           num_frames=n).eval()
    ref.save_pretrained(str(folder / "svd_unet"))
    net, _ = loading.build_and_load(OurSVDUNet, folder, "svd_unet")
    forward = compile_network(net)
    x = rng.standard_normal((2, n, 8, h, wd)).astype(np.float32)
    emb = rng.standard_normal((2, 1, 1024)).astype(np.float32)
    ids = np.array([[6.0, 127.0, 0.02]] * 2, np.float32)
    sig = np.array([0.5, 0.5], np.float32)
    args = (ms.Tensor(x), ms.Tensor(sig), ms.Tensor(emb), ms.Tensor(ids))
    tx, te, ti, tt = (torch.from_numpy(a) for a in (x, emb, ids, sig))
    table.add(f"SVD: denoiser step at SVD widths ({size}, CFG batch 2)",
              *interleaved(lambda: forward(*args).asnumpy(),
                           lambda: ref(tx, tt, encoder_hidden_states=te, added_time_ids=ti).sample, repeats))


@hydra.main(config_path="../conf", config_name="benchmark", version_base="1.3")
def main(c: DictConfig) -> None:
    import mindspore as ms
    import numpy as np
    import torch

    ms.runtime.launch_blocking()
    from toolkit import runner
    from toolkit.pipelines import cogvideox
    from toolkit.pipelines.common import Timer

    cfg = OmegaConf.to_container(c, resolve=True)
    run_dir = Path(os.getcwd()) / Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    folder = run_dir / "checkpoint"
    torch.set_grad_enabled(False)
    pipe = build_checkpoint(cfg, folder)
    table, R = Table(), cfg["repeats"]
    n, h, w = cfg["num_frames"], cfg["height"], cfg["width"]
    prompt = "a panda plays guitar in a bamboo forest"

    ours_t, ref_t = interleaved(lambda: cogvideox.load(folder, jit=True),
                                lambda: type(pipe).from_pretrained(str(folder), torch_dtype=torch.float32), 3)
    table.add("load (all components)", ours_t, ref_t)
    model = cogvideox.load(folder, jit=True)
    request = cogvideox.check_request({"prompt": prompt, "negative_prompt": "", "num_frames": n, "height": h,
                                       "width": w, "num_inference_steps": cfg["num_inference_steps"],
                                       "guidance_scale": cfg["guidance_scale"], "max_sequence_length": 32},
                                      model.configs)

    def ours_text():
        model.embed_cache.clear()
        cogvideox.encode(model, request)
    ref_text = lambda: pipe.encode_prompt(prompt, "", True, max_sequence_length=32)  # noqa: E731
    table.add("text encoding (prompt + negative)", *interleaved(ours_text, ref_text, R))
    cond, uncond = cogvideox.encode(model, request)
    pe, ne = pipe.encode_prompt(prompt, "", True, max_sequence_length=32)

    shape = cogvideox.latent_shape(model.configs, 1, n, h, w)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    from toolkit.models.cogvideox.transformer import rotary_tables_for
    rot = rotary_tables_for(model.configs.transformer, shape[1], h // 8, w // 8)
    xb, tb = ms.Tensor(np.concatenate([x, x])), ms.Tensor(np.concatenate([uncond, cond]))
    ts = ms.Tensor(np.array([500.0, 500.0], np.float32))
    ours_fwd = lambda: model.forward(xb, tb, ts, *rot).asnumpy()  # noqa: E731
    rot_t = pipe._prepare_rotary_positional_embeddings(h, w, shape[1], "cpu")
    txb, ttb = torch.from_numpy(np.concatenate([x, x])), torch.cat([ne, pe])
    tts = torch.tensor([500, 500])
    ref_fwd = lambda: pipe.transformer(txb, ttb, tts, image_rotary_emb=rot_t, return_dict=False)[0]  # noqa: E731
    table.add(f"denoiser step (CFG batch 2, {shape[1]} latent frames)", *interleaved(ours_fwd, ref_fwd, R))

    def ours_loop():
        t = Timer()
        cogvideox.generate(model, {**request, "latents": x}, np.random.default_rng(0), timer=t, progress=False)
        return t
    loop_ours, loop_ref = [], []
    ours_loop()
    for _ in range(R):
        loop_ours.append(settled(ours_loop).seconds["denoise"])
        loop_ref.append(timed(lambda: pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_frames=n, height=h,
                                           width=w, num_inference_steps=cfg["num_inference_steps"],
                                           guidance_scale=cfg["guidance_scale"], latents=torch.from_numpy(x),
                                           output_type="latent")))
    table.add(f"sampling loop ({cfg['num_inference_steps']} steps)", loop_ours, loop_ref,
              "reference time includes its latent preparation (negligible)")

    z = np.random.default_rng(1).standard_normal((1, 16, shape[1], h // 8, w // 8)).astype(np.float32)
    zm, zt = ms.Tensor(z), torch.from_numpy(z)
    table.add("VAE decode, untiled", *interleaved(lambda: model.vae.decode(zm).asnumpy(),
                                                  lambda: pipe.vae.decode(zt).sample, R))
    tile = dict(tile_sample_min_height=48, tile_sample_min_width=40)
    pipe.vae.enable_tiling(**tile)
    table.add("VAE decode, tiled (48x40 px tiles)", *interleaved(lambda: model.vae.decode_tiled(zm, **tile).asnumpy(),
                                                              lambda: pipe.vae.decode(zt).sample, R))
    pipe.vae.disable_tiling()

    animatediff_rows(table, run_dir, R, cfg["num_inference_steps"])
    svd_rows(table, run_dir, R, cfg["num_inference_steps"])
    if cfg["wide"]["enabled"]:
        table.rows += in_child(_child_wide_rows, cfg, str(run_dir))

    # a guidance sweep in one process: the model loads once, the prompt is encoded once
    base = {"model": {"family": "cogvideox", "path": str(folder), "dtype": "float32"}, "prompt": prompt,
            "negative_prompt": "", "num_frames": n, "height": h, "width": w, "seed": 0, "max_sequence_length": 32,
            "num_inference_steps": cfg["num_inference_steps"], "runtime": {"jit": True, "progress": False},
            "output": {"video": False, "frames": False}, "vae": {"tiling": False}}
    runner._loaded.clear()
    records = [runner.run({**base, "guidance_scale": 4.0 + 2 * i}, run_dir / f"sweep_{i}", resume=False)
               for i in range(cfg["sweep_points"])]
    t = [r["timings_s"] for r in records]
    single = min(x["denoise"] for x in t[1:])  # one steady denoising loop
    once = t[0]["load"] + t[0]["encode_prompt"] + (t[0]["denoise"] - single)  # load, encode, first compile
    spent = sum(x["load"] + x["encode_prompt"] + x["denoise"] for x in t)
    budget = cfg["sweep_points"] * single + once
    sweep_note = (f"{cfg['sweep_points']}-point guidance sweep in one process: load + encode + denoising took "
                  f"{spent:.2f} s against {cfg['sweep_points']} x one steady loop ({single:.2f} s) + one load, "
                  f"encode and jit compile ({once:.2f} s) = {budget:.2f} s: **ratio {spent / budget:.2f}** "
                  f"(target <= 1.1). Model reused {[r['reused']['model'] for r in records]}, prompt embeddings "
                  f"reused {[r['reused']['prompt_embeds'] for r in records]}.")
    print(sweep_note)

    memory = []
    if cfg["memory"]:
        memory += decode_memory(folder, tuple(cfg["memory_frames"]), cfg["memory_repeats"])
        from tests.reference import svd as svd_ref
        svd_ref.build_vae().save_pretrained(str(run_dir / "svd" / "vae"))
        for chunk in cfg["svd_decode_chunks"]:
            a, b = (in_child(_child_svd_decode, str(run_dir / "svd"), f, chunk) for f in cfg["svd_frames"])
            memory.append((f"SVD temporal decode, decode_chunk_size={chunk}: peak RSS growth, "
                           f"{cfg['svd_frames'][0]} -> {cfg['svd_frames'][1]} frames (256x256)",
                           f"{a:.0f} MB -> {b:.0f} MB ({b / max(a, 1e-9):.2f}x)"))
        if cfg["load_memory"]["enabled"]:
            memory += load_memory(cfg, run_dir)
        memory += attention_memory(cfg["attention_memory"])
        memory += unet_memory(cfg["unet_memory"])
        for name, value in memory:
            print(name, value)

    write_markdown(cfg, table, sweep_note, memory, run_dir)


def _label(stage: str, keyword: str) -> str:
    """'SVD (tiny, ...): VAE decode (...)' -> 'SVD'; 'VAE decode, tiled (48x40 px tiles)' -> 'CogVideoX tiled'."""
    family, _, rest = stage.rpartition(": ")
    detail = rest.replace(keyword, "").split(" (")[0].strip(" ,")
    route = [w for w in ("tiled", "in compiled parts") if re.search(rf"(?<!un){w}", rest) and w not in detail]
    return f"{family.split(' (')[0] if family else 'CogVideoX'} {', '.join([detail or 'small checkpoint'] + route)}"


def target_lines(rows, memory) -> list[str]:
    """The performance issue's targets, each marked met or not from this run's numbers."""
    out = []

    def mark(ok):
        return "met" if ok else "**not met**"
    for keyword, limit in (("denoiser step", 1.0), ("VAE decode", 1.5)):
        hits = [r for r in rows if keyword in r["stage"] and r["ratio"]]
        if hits:
            out.append(f"- {keyword} <= {limit}x diffusers: " + "; ".join(
                f"{r['ratio']:.2f}x {mark(r['ratio'] <= limit)} ({_label(r['stage'], keyword)})" for r in hits))
    for name, value in memory:
        if name.startswith("VAE decode tiled"):
            ours, ref = (float(part.rsplit("(", 1)[1].split("x")[0]) for part in value.split(" / "))
            out.append(f"- tiled decode, ~4x the frames <= 1.3x the peak memory: {ours:.2f}x, {mark(ours <= 1.3)} "
                       f"(diffusers: {ref:.2f}x)")
        if name.startswith("load"):
            ratio = float(value.split("(", 1)[1].split("x")[0])
            out.append(f"- load peak RSS <= 1.3x the weights ({name.split('(')[1].split(')')[0]}): {ratio:.2f}x, "
                       f"{mark(ratio <= 1.3)}")
    return out


def cpu_name() -> str:
    """The CPU model and its widest vector extension, from /proc/cpuinfo (Linux), else the machine type."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return f"{model}{' with ' + simd if simd else ''}"


def write_markdown(cfg, table, sweep_note, memory, run_dir):
    import mindspore
    import torch
    out = ROOT / cfg["output"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python experiments/benchmark.py` on {date.today()}: {cpu_name()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, MindSpore {mindspore.__version__}, "
        f"PyTorch {torch.__version__}. Both sides run in one process, interleaved, every timed call after a "
        f"{SETTLE_SECONDS:g} s pause (see Notes); times are seconds, "
        f"min and median of {cfg['repeats']} repetitions; **ratio = ours min / reference min** (lower is better).",
        "",
        f"Main checkpoint: a CogVideoX written by diffusers with random weights — transformer "
        f"{cfg['transformer']['num_layers']} layers x width "
        f"{cfg['transformer']['num_attention_heads'] * cfg['transformer']['attention_head_dim']}, VAE "
        f"{cfg['vae']['block_out_channels']}; {cfg['num_frames']} frames at {cfg['width']}x{cfg['height']}, "
        f"{cfg['num_inference_steps']} steps, guidance {cfg['guidance_scale']}.",
        "",
        "| stage | ours min | ours median | diffusers min | diffusers median | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.rows:
        ref = f"{r['ref_min']:.4f} | {r['ref_median']:.4f}" if r["ref_min"] else "- | -"
        ratio = f"**{r['ratio']:.2f}x**" if r["ratio"] else "-"
        lines.append(f"| {r['stage']} | {r['ours_min']:.4f} | {r['ours_median']:.4f} | {ref} | {ratio} |")
    lines += ["", "## Against the targets", ""] + target_lines(table.rows, memory)
    lines += ["", "## Sweeps", "", sweep_note, ""]
    if memory:
        lines += ["## Memory (child processes, peak RSS)", "", "| measurement | value |", "|---|---|"]
        lines += [f"| {a} | {b} |" for a, b in memory]
        lines.append("")
    lines += ["## Notes", "",
              "- Each row's timed calls start after a full garbage collection (`gc.collect()`): the load row builds "
              "eight pipelines and drops them, and a collection of that garbage falling inside a timed call made our "
              "small CogVideoX step read 1.01x instead of 0.85-0.93x (same code, side by side: 36 vs 29 ms in the "
              "first round after the loads, the same 29 ms as without them once collected).",
              f"- Every timed call starts {SETTLE_SECONDS:g} s after the previous one: both libraries' worker threads "
              "spin after their work (MindSpore's ~150 ms), and a call started right after the other library's runs "
              "on contended cores. Back to back, the small CogVideoX step measured 41.6 ms ours (34.8 ms in a block "
              "of its own) and 35.9 ms the reference (34.7 ms): 1.14-1.26x in earlier runs of this file, ~0.92x "
              "paused. Real runs use one library.",
              "- The small checkpoint's tensors are too small for matmul speed to pay for MindSpore's per-operator "
              "cost; the rows at CogVideoX's real widths show where real runs spend their time.",
              "- MindSpore 2.10's own CPU convolution is not used: on AVX-512 machines its oneDNN call runs a "
              "reference kernel (100-300x slower than PyTorch); see README, Performance.",
              "- AnimateDiff and SVD rows use the test suite's tiny checkpoints (UNet widths 8-64), far below real "
              "widths: there per-operator cost is all there is. Their VAEs are also measured at Stable Diffusion's "
              "widths (the rows 'at widths [128, 256, 512, 512]').",
              "- The rows at real widths run in a fresh process (both sides): after the rows above, the process's "
              "larger, fragmented memory pool slowed our VAE decodes by 10-15%.",
              "- `import mindspore` sets OMP_NUM_THREADS=1 in the C environment, which spawned processes inherit "
              "(PyTorch ran single-threaded, 2x slower, in them): the benchmark's child processes start without it.",
              "- SD's VAE (AnimateDiff) and SVD's temporal decoder are compiled with mindspore.jit, as the pipelines "
              "run them by default (1.5-1.8x faster than eager at real widths; the warm-up repetition compiles, a few "
              "seconds per shape): whole chunks while their convolutions run in few pieces "
              "(layers.fits_compiled_graph), else AnimateDiff's one frame per graph call. A graph unrolls every "
              "convolution piece and MindSpore refuses graphs past its call-depth limit (raised, a decode of ~340 "
              "pieces per convolution compiled for 13 minutes and peaked at 3x the memory), so real-size SVD chunks "
              "(e.g. 14 frames at 576x1024) decode in compiled parts (base.CompiledParts: the spatial layers one frame"
              " per graph call, the temporal halves over the chunk, only the glue eager; the row 'in compiled parts' "
              "runs that route on a chunk that would fit): fully eager, the temporal decoder measured 2.74x PyTorch "
              "before it was compiled, 2.13x (4.71 s vs 2.21 s, min of 3, one process) once its temporal convolutions "
              "were one product each. The CogVideoX VAE runs eagerly: compiled, its decoder took ~21 s to compile per "
              "chunk shape and then ran ~3.6x slower than eager (MindSpore 2.10, this machine; dict-valued conv caches"
              " also recompile on every call). Measured since: in a compiled graph a slice of a large tensor costs "
              "about a copy of the whole tensor (a 40000-row slice of a 491 MB tensor: 88 ms compiled, 4.7 ms eagerly,"
              " where it is a view), so the 3-D Winograd convolution, which multiplies row slices per temporal tap, "
              "runs ~7x slower compiled than eagerly.",
              "- Run to run, this machine moves single rows by 10-20%, ours and the reference alike: the same code's "
              "'AnimateDiff: VAE decode at widths' row read 1.25x (ours 1.92 s) and 1.53x (ours 2.27 s) in two runs "
              "an hour apart, while the two code versions side by side in one process took 1.91 s and 1.89 s. A ratio "
              "within ~15% of a target is met or missed by chance; the denoiser rows at real widths have stayed at "
              "0.63-0.84x in every run of the current code.",
              "- Each peak-RSS value is the minimum over fresh processes: single processes of the same decode vary by "
              "20-40% (allocator state). Growth includes MindSpore's eager-mode retention (~1 KB kept per matmul "
              "call, measured in isolation), which grows with the number of decode chunks and tiles.",
              "", "Raw numbers: `benchmark.json` in the run directory.", ""]
    out.write_text("\n".join(lines))
    (run_dir / "benchmark.json").write_text(json.dumps({"rows": table.rows, "sweep": sweep_note,
                                                        "memory": memory}, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
