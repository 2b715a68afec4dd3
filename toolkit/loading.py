"""Reading diffusers-format checkpoints: a folder (local or from the hub) with model_index.json,
one sub-folder per component holding config.json and safetensors weights (single, sharded with an
``*.safetensors.index*.json``, or ``variant`` files such as ``x.fp16.safetensors`` and
``x.fp16-00001-of-00002.safetensors``).

The network is built under ``no_init_parameters``. Weights already in the compute dtype are taken from
MindSpore's memory-mapped safetensors reader (the parameters share the mapped data: one copy in memory);
weights stored in another dtype (fp16/bf16 files computed in float32) are read tensor by tensor and
converted, so the peak stays at the converted weights plus one tensor. Every parameter must be
found with its exact shape; missing, unexpected or mis-shaped keys raise an error that lists them.
Pickle formats are refused: loading them can execute code.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable

import mindspore as ms

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, read or matched to the network."""


KNOWN_VARIANTS = ("fp16", "bf16", "fp32", "ema", "non_ema")


def hub_patterns(components: Iterable[str] | None = None, variant: str | None = None,
                 configs_only: bool = False) -> tuple[list[str], list[str]]:
    """(allow_patterns, ignore_patterns) for fetching just what a family loads: the JSON/tokenizer files,
    and the safetensors of the named components (all folders when None) in the asked variant only —
    not a safety checker, not the other variants' duplicate weights, never pickles."""
    dirs = [f"{c}/" for c in components] if components else [""]
    allow = ["model_index.json"] + [f"{d}{ext}" for d in dirs for ext in ("*.json", "*.txt", "*.model")]
    ignore = [f"*{suffix}" for suffix in PICKLE_SUFFIXES]
    if configs_only:
        return allow, ignore
    if variant:
        allow += [f"{d}*.{variant}.safetensors" for d in dirs] + [f"{d}*.{variant}-*.safetensors" for d in dirs]
    else:
        allow += [f"{d}*.safetensors" for d in dirs]
        ignore += [f"*.{v}.safetensors" for v in KNOWN_VARIANTS] + [f"*.{v}-*.safetensors" for v in KNOWN_VARIANTS]
    return allow, ignore


def resolve_checkpoint(path_or_id: str, revision: str | None = None,
                       allow_patterns: Iterable[str] | None = None,
                       ignore_patterns: Iterable[str] | None = None) -> Path:
    """A local folder as is; otherwise a hub repo id fetched (or read from the cache) with huggingface_hub.

    ``HF_HUB_OFFLINE=1`` is honoured: then only the local cache is read, and a repo that is not cached
    is an error naming the repo and how to provide it.
    """
    p = Path(os.path.expanduser(str(path_or_id)))
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"model.path={path_or_id!r} is a file; give a diffusers-format folder "
                                  "(with model_index.json) or a hub repo id")
        return p
    if str(path_or_id).startswith((".", "/", "~")) or str(path_or_id).count("/") != 1:
        raise CheckpointError(f"model.path={path_or_id!r}: no such folder, and it is not a hub repo id "
                              "of the form 'owner/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    allow, ignore = (list(allow_patterns), list(ignore_patterns or ())) if allow_patterns else hub_patterns()
    try:
        return Path(snapshot_download(str(path_or_id), revision=revision, allow_patterns=allow,
                                      ignore_patterns=ignore or None))
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"model.path={path_or_id!r}: the weights are not in the local hub cache and the hub cannot be "
            f"reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Download them on a machine "
            "with network access (`huggingface-cli download "
            f"{path_or_id}`) and copy the cache, or pass model.path=<local folder>.") from e
    except Exception as e:  # network errors, gated repos, missing repos
        raise CheckpointError(f"model.path={path_or_id!r}: could not fetch from the hub: {e}") from e


def read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def read_config(folder: Path, subfolder: str | None = None) -> dict:
    d = Path(folder) / subfolder if subfolder else Path(folder)
    return read_json(d / "config.json")


def _is_variant_file(name: str, variant: str | None) -> bool:
    stem = name[: -len(".safetensors")]
    parts = stem.split(".")
    if variant is None:
        return len(parts) == 1 or (len(parts) == 2 and re.fullmatch(r"\d{5}-of-\d{5}", parts[1]) is not None)
    if len(parts) != 2:
        return False
    tail = parts[1]
    return tail == variant or re.fullmatch(rf"{re.escape(variant)}-\d{{5}}-of-\d{{5}}", tail) is not None


def weight_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The safetensors files of one component folder: the shards its index names, or the single file.

    With ``variant`` ("fp16"), the variant's files; an absent variant is an error that says which exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"missing component folder {folder}")
    names = sorted(p.name for p in folder.iterdir())
    suffix = f".safetensors.index.{variant}.json" if variant else ".safetensors.index.json"
    indexes = [n for n in names if n.endswith(suffix) and (variant or n.count(".") == 3)]
    if indexes:
        index = read_json(folder / indexes[0])
        shards = sorted(set(index.get("weight_map", {}).values()))
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise CheckpointError(f"{folder / indexes[0]} names shards that are missing: {missing}")
        return [folder / s for s in shards]
    singles = [n for n in names if n.endswith(".safetensors") and _is_variant_file(n, variant)]
    if singles:
        return [folder / n for n in singles]
    if any(n.endswith(".safetensors") for n in names):
        have = sorted(n for n in names if n.endswith(".safetensors"))
        raise CheckpointError(f"{folder}: no weights for variant={variant!r}; files present: {have}")
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise CheckpointError(
            f"{folder}: only pickle weights ({pickles}); they are refused because loading a pickle can run "
            "arbitrary code. Convert them to safetensors (e.g. diffusers' save_pretrained(safe_serialization=True)).")
    raise CheckpointError(f"{folder}: no safetensors weights found")


def read_state(files: list[Path]) -> dict[str, ms.Parameter]:
    """All tensors of the files, memory-mapped by MindSpore's safetensors reader (nothing is read until
    used)."""
    state: dict = {}
    for f in files:
        try:
            state.update(ms.load_checkpoint(str(f), format="safetensors"))
        except Exception as e:
            raise CheckpointError(f"cannot read {f}: {e}") from e
    return state


_SAFETENSORS_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def _cast_tensors(keys: set[str], files: list[Path], dtype):
    """(key, tensor in ``dtype``) one at a time: each read on its own by a plain read (no mapping) and
    converted on the host. A memory-mapped source keeps every converted tensor's pages resident until the
    whole file is released: an fp16 file loaded as float32 peaked at 1.5x the float32 weights that way;
    like this the peak is the float32 weights plus one tensor."""
    import numpy as np

    for path in files:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            for key in sorted(keys.intersection(header)):
                info = header[key]
                start, end = info["data_offsets"]
                stored = np.dtype(_SAFETENSORS_NUMPY[info["dtype"]])
                f.seek(8 + size + start)
                raw = np.fromfile(f, stored, (end - start) // stored.itemsize)
                if info["dtype"] == "BF16":  # the upper half of a float32: exact
                    raw = (raw.astype(np.uint32) << 16).view(np.float32)
                value = ms.Tensor(raw.reshape(info["shape"]).astype(np.float32))
                yield key, value if dtype == ms.float32 else value.astype(dtype)


def load_weights(net: ms.nn.Cell, files: list[Path], dtype=ms.float32, where: str = "") -> ms.nn.Cell:
    """Copy the checkpoint tensors into ``net`` after an exact key and shape check.

    A network may define ``checkpoint_key(name, keys) -> str | None`` to map a parameter name to the
    checkpoint key that holds it (tied or renamed weights), and ``ignored_checkpoint_keys`` (regexes)
    for checkpoint entries it does not use (e.g. buffers the reference stores).
    """
    state = read_state(files)
    keys = set(state)
    params = dict(net.parameters_and_names())
    mapper: Callable = getattr(net, "checkpoint_key", None) or (lambda name, keys: name)
    ignored = [re.compile(r) for r in getattr(net, "ignored_checkpoint_keys", ())]
    used, missing, shapes, mapped = set(), [], [], {}
    for name, p in params.items():
        key = mapper(name, keys)
        if key is None or key not in state:
            missing.append(name)
            continue
        used.add(key)
        if tuple(state[key].shape) != tuple(p.shape):
            shapes.append(f"{name}: checkpoint {tuple(state[key].shape)} vs network {tuple(p.shape)}")
            continue
        mapped[name] = key
    unexpected = sorted(k for k in keys - used if not any(r.fullmatch(k) for r in ignored))
    if missing or unexpected or shapes:
        lines = [f"checkpoint {where or files[0].parent} does not match {type(net).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {sorted(missing)[:20]}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}")
        if shapes:
            lines.append(f"  wrong shapes ({len(shapes)}): {shapes[:20]}")
        raise CheckpointError("\n".join(lines))
    cast = {}
    for name, key in mapped.items():
        if state[key].dtype == dtype:
            params[name].set_data(state[key])  # shares the memory-mapped data: one copy of the weights
        else:
            cast.setdefault(key, []).append(name)  # tied weights: one checkpoint key, several parameters
    del state
    for key, value in _cast_tensors(set(cast), files, dtype):
        for name in cast[key]:
            params[name].set_data(value)
    return net


def build_and_load(cls, folder: Path, subfolder: str | None = None, variant: str | None = None,
                   dtype=ms.float32):
    """Build ``cls(**config)`` without initialising its parameters, then load the component's weights."""
    from mindspore.nn.utils import no_init_parameters

    d = Path(folder) / subfolder if subfolder else Path(folder)
    config = read_config(folder, subfolder)
    with no_init_parameters():
        net = cls.from_config(config)
    files = weight_files(d, variant)
    load_weights(net, files, dtype=dtype, where=str(d))
    net.set_train(False)
    return net, config
