"""Embedded checkpoints: tiny diffusers-format folders the toolkit writes itself, deterministically, so
that `python experiments/generate.py` works on a machine with no network. Their weights are random
(PCG64 from a fixed seed); they exercise the same loading and sampling code as real checkpoints.

The folder is written once into the cache (``$MINDVIDEO_CACHE`` or ``~/.cache/mindvideo-toolkit``),
under a temporary name renamed into place when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1  # bump when an embedded checkpoint's content changes


def cache_root() -> Path:
    return Path(os.environ.get("MINDVIDEO_CACHE", Path.home() / ".cache" / "mindvideo-toolkit"))


def _random_state(cell, seed: int) -> dict[str, np.ndarray]:
    """Deterministic weights for every parameter of ``cell``: norms near 1, biases near 0, matrices
    scaled by 1/sqrt(fan_in) so activations stay O(1) through the tiny network."""
    rng = np.random.Generator(np.random.PCG64(seed))
    state = {}
    for name, p in sorted(cell.parameters_and_names()):
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        if len(shape) == 1 and ("norm" in name or leaf in ("weight", "gamma")) and leaf != "bias":
            value = 1.0 + 0.02 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.02 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            value = rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
        state[name] = value.astype(np.float32)
    return state


def _write_component(folder: Path, cls, config: dict, weights_name: str, seed: int, class_name: str,
                     library_version: dict):
    from mindspore.nn.utils import no_init_parameters
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    full = {"_class_name": class_name, **library_version, **config}
    (folder / "config.json").write_text(json.dumps(full, indent=2))
    with no_init_parameters():
        cell = cls.from_config(config)
    save_file(_random_state(cell, seed), str(folder / weights_name), metadata={"format": "pt"})


def _tiny_cogvideox(folder: Path) -> None:
    from toolkit.models.cogvideox.transformer import CogVideoXTransformer3DModel
    from toolkit.models.cogvideox.vae import AutoencoderKLCogVideoX
    from toolkit.models.t5.encoder import T5EncoderModel
    from toolkit.tiny_tokenizers import write_tiny_t5_tokenizer

    diffusers_v = {"_diffusers_version": "0.42.1"}
    vocab = write_tiny_t5_tokenizer(folder / "tokenizer")
    t5 = dict(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=32,
              feed_forward_proj="gated-gelu", is_gated_act=True, dense_act_fn="gelu_new",
              layer_norm_epsilon=1e-6, dropout_rate=0.0, model_type="t5", architectures=["T5EncoderModel"],
              is_encoder_decoder=False, tie_word_embeddings=False)
    _write_component(folder / "text_encoder", T5EncoderModel, t5, "model.safetensors", 1,
                     "T5EncoderModel", {})
    # transformers writes no _class_name; keep its own keys only
    cfg = json.loads((folder / "text_encoder" / "config.json").read_text())
    cfg.pop("_class_name")
    (folder / "text_encoder" / "config.json").write_text(json.dumps(cfg, indent=2))
    transformer = dict(num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=4,
                       flip_sin_to_cos=True, freq_shift=0, time_embed_dim=64, ofs_embed_dim=None,
                       text_embed_dim=32, num_layers=2, dropout=0.0, attention_bias=True, sample_width=12,
                       sample_height=8, sample_frames=9, patch_size=2, patch_size_t=None,
                       temporal_compression_ratio=4, max_text_seq_length=32, activation_fn="gelu-approximate",
                       timestep_activation_fn="silu", norm_elementwise_affine=True, norm_eps=1e-5,
                       spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0,
                       use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False,
                       patch_bias=True)
    _write_component(folder / "transformer", CogVideoXTransformer3DModel, transformer,
                     "diffusion_pytorch_model.safetensors", 2, "CogVideoXTransformer3DModel", diffusers_v)
    vae = dict(in_channels=3, out_channels=3, down_block_types=["CogVideoXDownBlock3D"] * 4,
               up_block_types=["CogVideoXUpBlock3D"] * 4, block_out_channels=[16, 16, 16, 16],
               latent_channels=4, layers_per_block=1, act_fn="silu", norm_eps=1e-6, norm_num_groups=4,
               temporal_compression_ratio=4, sample_height=64, sample_width=96, scaling_factor=1.15258426,
               shift_factor=None, latents_mean=None, latents_std=None, force_upcast=True,
               use_quant_conv=False, use_post_quant_conv=False, invert_scale_latents=False)
    _write_component(folder / "vae", AutoencoderKLCogVideoX, vae, "diffusion_pytorch_model.safetensors", 3,
                     "AutoencoderKLCogVideoX", diffusers_v)
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "CogVideoXDPMScheduler", **diffusers_v, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "clip_sample": False, "clip_sample_range": 1.0,
        "num_train_timesteps": 1000, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
        "sample_max_value": 1.0, "set_alpha_to_one": True, "snr_shift_scale": 3.0, "steps_offset": 0,
        "timestep_spacing": "trailing", "trained_betas": None}, indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "CogVideoXPipeline", **diffusers_v,
        "scheduler": ["diffusers", "CogVideoXDPMScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLCogVideoX"]}, indent=2))


EMBEDDED = {"tiny-cogvideox": _tiny_cogvideox}


def ensure(name: str) -> Path:
    """The folder of embedded checkpoint ``name``, written on first use."""
    if name not in EMBEDDED:
        raise ValueError(f"model.path=embedded:{name}: unknown embedded checkpoint "
                         f"(allowed: {', '.join('embedded:' + n for n in EMBEDDED)})")
    folder = cache_root() / f"{name}-v{FORMAT_VERSION}"
    if (folder / "model_index.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    try:
        EMBEDDED[name](tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # written concurrently by another process: keep theirs
            if not (folder / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
