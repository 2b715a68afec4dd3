"""Checkpoint folders: which files are read, and that a mismatch is an error listing the keys."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from toolkit import loading
from toolkit.models.base import ModelMixin
from toolkit.models.layers import LayerNorm, linear


class Toy(ModelMixin):
    def __init__(self, dim: int = 4, out: int = 3):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.proj = linear(dim, out)

    def construct(self, x):
        return self.proj(self.norm(x))


def toy_state(dim=4, out=3, seed=0):
    r = np.random.default_rng(seed)
    return {"norm.weight": r.random(dim, dtype=np.float32), "norm.bias": r.random(dim, dtype=np.float32),
            "proj.weight": r.random((out, dim), dtype=np.float32), "proj.bias": r.random(out, dtype=np.float32)}


def write(folder, files: dict, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or {"_class_name": "Toy", "dim": 4, "out": 3}))
    for name, state in files.items():
        if name.endswith(".json"):
            (folder / name).write_text(json.dumps(state))
        else:
            save_file(state, str(folder / name))


def test_single_file_loads_every_parameter_exactly(tmp_path):
    state = toy_state()
    write(tmp_path / "m", {"diffusion_pytorch_model.safetensors": state})
    net, cfg = loading.build_and_load(Toy, tmp_path, "m")
    got = {n: p.asnumpy() for n, p in net.parameters_and_names()}
    assert set(got) == set(state)
    for k in state:
        np.testing.assert_array_equal(got[k], state[k])


def test_sharded_checkpoint_reads_the_shards_its_index_names(tmp_path):
    state = toy_state()
    a = {k: v for k, v in state.items() if k.startswith("norm")}
    b = {k: v for k, v in state.items() if k.startswith("proj")}
    index = {"metadata": {}, "weight_map": {**{k: "m-00001-of-00002.safetensors" for k in a},
                                             **{k: "m-00002-of-00002.safetensors" for k in b}}}
    write(tmp_path / "m", {"m-00001-of-00002.safetensors": a, "m-00002-of-00002.safetensors": b,
                           "m.safetensors.index.json": index})
    net, _ = loading.build_and_load(Toy, tmp_path, "m")
    np.testing.assert_array_equal(dict(net.parameters_and_names())["proj.bias"].asnumpy(), state["proj.bias"])


def test_variant_selects_the_variant_file_and_plain_selects_the_plain_one(tmp_path):
    plain, half = toy_state(seed=1), toy_state(seed=2)
    write(tmp_path / "m", {"model.safetensors": plain,
                           "model.fp16.safetensors": {k: v.astype(np.float16) for k, v in half.items()}})
    assert [p.name for p in loading.weight_files(tmp_path / "m")] == ["model.safetensors"]
    assert [p.name for p in loading.weight_files(tmp_path / "m", "fp16")] == ["model.fp16.safetensors"]
    net, _ = loading.build_and_load(Toy, tmp_path, "m", variant="fp16")
    np.testing.assert_allclose(dict(net.parameters_and_names())["proj.weight"].asnumpy(), half["proj.weight"],
                               atol=1e-3)  # fp16 storage rounding


@pytest.mark.parametrize("stored", ["bfloat16", "float16"])
def test_half_precision_shards_load_as_float32_with_the_values_torch_upcasts_to(stored, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    state = {k: torch.from_numpy(v * 3 - 1).to(getattr(torch, stored)) for k, v in toy_state(seed=3).items()}
    names = sorted(state)
    save_torch({k: state[k] for k in names[:2]}, str(tmp_path / "m-00001-of-00002.safetensors"))
    save_torch({k: state[k] for k in names[2:]}, str(tmp_path / "m-00002-of-00002.safetensors"))
    index = {"weight_map": {k: f"m-0000{1 + (i >= 2)}-of-00002.safetensors" for i, k in enumerate(names)}}
    write(tmp_path, {"m.safetensors.index.json": index})
    net, _ = loading.build_and_load(Toy, tmp_path)
    got = dict(net.parameters_and_names())
    for k in names:
        assert got[k].dtype == loading.ms.float32
        np.testing.assert_array_equal(got[k].asnumpy(), state[k].float().numpy(), err_msg=k)


def test_sharded_variant_naming_is_recognised(tmp_path):
    state = toy_state()
    index = {"weight_map": {k: "model.fp16-00001-of-00001.safetensors" for k in state}}
    write(tmp_path / "m", {"model.fp16-00001-of-00001.safetensors": state,
                           "model.safetensors.index.fp16.json": index, "model.safetensors": state})
    assert [p.name for p in loading.weight_files(tmp_path / "m", "fp16")] == ["model.fp16-00001-of-00001.safetensors"]


def test_missing_variant_is_an_error_listing_the_files_present(tmp_path):
    write(tmp_path / "m", {"model.safetensors": toy_state()})
    with pytest.raises(loading.CheckpointError, match=r"variant='fp16'.*model.safetensors"):
        loading.weight_files(tmp_path / "m", "fp16")


def test_pickle_weights_are_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(loading.CheckpointError, match="pickle"):
        loading.weight_files(tmp_path / "m")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = toy_state()
    state.pop("proj.bias")
    state["proj.extra"] = np.zeros(2, np.float32)
    write(tmp_path / "m", {"model.safetensors": state})
    with pytest.raises(loading.CheckpointError) as e:
        loading.build_and_load(Toy, tmp_path, "m")
    assert "missing keys (1): ['proj.bias']" in str(e.value)
    assert "unexpected keys (1): ['proj.extra']" in str(e.value)


def test_wrong_shape_is_an_error_naming_both_shapes(tmp_path):
    state = toy_state()
    state["proj.weight"] = np.zeros((3, 5), np.float32)
    write(tmp_path / "m", {"model.safetensors": state})
    with pytest.raises(loading.CheckpointError, match=r"proj.weight: checkpoint \(3, 5\) vs network \(3, 4\)"):
        loading.build_and_load(Toy, tmp_path, "m")


def test_uncached_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(loading.CheckpointError, match="not in the local hub cache"):
        loading.resolve_checkpoint("THUDM/CogVideoX-5b")


def test_hub_id_is_read_from_the_local_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as c
    cache = tmp_path / "hub"
    snap = cache / "models--owner--tiny" / "snapshots" / ("a" * 40)
    write(snap / "m", {"model.safetensors": toy_state()})
    (cache / "models--owner--tiny" / "refs").mkdir(parents=True)
    (cache / "models--owner--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    folder = loading.resolve_checkpoint("owner/tiny")
    assert (folder / "m" / "config.json").exists()


def test_a_nonexistent_local_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(loading.CheckpointError, match="no such folder"):
        loading.resolve_checkpoint(str(tmp_path / "nope" / "deeper"))


def test_hub_fetch_takes_only_the_families_components_in_the_asked_variant():
    from fnmatch import fnmatch
    allow, ignore = loading.hub_patterns(["unet", "vae"], "fp16")

    def fetched(name):
        return any(fnmatch(name, p) for p in allow) and not any(fnmatch(name, p) for p in ignore)
    assert fetched("unet/diffusion_pytorch_model.fp16.safetensors")
    assert fetched("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors")
    assert fetched("model_index.json") and fetched("vae/config.json")
    assert not fetched("unet/diffusion_pytorch_model.safetensors")
    assert not fetched("safety_checker/model.fp16.safetensors")
    assert not fetched("unet/diffusion_pytorch_model.bin")


def test_hub_fetch_without_variant_skips_variant_duplicates():
    from fnmatch import fnmatch
    allow, ignore = loading.hub_patterns(None, None)

    def fetched(name):
        return any(fnmatch(name, p) for p in allow) and not any(fnmatch(name, p) for p in ignore)
    assert fetched("transformer/diffusion_pytorch_model-00001-of-00003.safetensors")
    assert not fetched("transformer/diffusion_pytorch_model.fp16.safetensors")
    assert not fetched("text_encoder/model.bf16-00001-of-00002.safetensors")


@pytest.mark.parametrize("asked", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32_on_cpu_and_recorded_so(asked):
    from toolkit import runner

    assert runner.compute_dtype(asked) == (loading.ms.float32, "float32")
    assert runner.compute_dtype("float32") == (loading.ms.float32, "float32")
