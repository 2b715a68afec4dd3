"""The MindSpore T5 encoder against transformers' T5EncoderModel on the same checkpoint and token ids.

Tolerance: atol 1e-5 on outputs of magnitude ~3 (fp32; measured differences ~2e-6, from matmul and
rsqrt rounding). Bucketed position biases are table lookups and must match exactly.
"""
from __future__ import annotations

import json
import logging
import shutil

import mindspore as ms
import numpy as np
import pytest

from toolkit.loading import CheckpointError, build_and_load
from toolkit.models.t5.encoder import T5Attention, T5EncoderModel, relative_position_buckets

ATOL = 1e-5


@pytest.fixture(scope="module")
def ref(cogvideox_ref):
    folder, pipe = cogvideox_ref("5b")
    return folder, pipe.text_encoder


@pytest.fixture(scope="module")
def net(ref):
    return build_and_load(T5EncoderModel, ref[0], "text_encoder")[0]


def token_ids(encoder, rng, batch=2, seq=16):
    return rng.integers(0, encoder.config.vocab_size, (batch, seq), dtype=np.int64)


def torch_forward(encoder, ids, mask=None):
    import torch

    with torch.no_grad():
        kw = {} if mask is None else {"attention_mask": torch.from_numpy(mask)}
        return encoder(torch.from_numpy(ids), **kw)[0].numpy()


def test_matches_transformers_without_attention_mask(ref, net, rng):
    ids = token_ids(ref[1], rng)
    out = net(ms.Tensor(ids)).asnumpy()
    assert out.dtype == np.float32 and out.shape == (2, 16, ref[1].config.d_model)
    np.testing.assert_allclose(out, torch_forward(ref[1], ids), atol=ATOL, rtol=0)


def test_matches_transformers_with_padding_mask(ref, net, rng):
    ids = token_ids(ref[1], rng)
    mask = np.ones_like(ids)
    mask[0, 5:] = 0
    mask[1, 11:] = 0
    out = net(ms.Tensor(ids), ms.Tensor(mask)).asnumpy()
    np.testing.assert_allclose(out, torch_forward(ref[1], ids, mask), atol=ATOL, rtol=0)


def test_matches_transformers_under_jit(ref, net, rng):
    ids = token_ids(ref[1], rng)
    mask = np.ones_like(ids)
    mask[0, 9:] = 0
    out = ms.jit(net.construct)(ms.Tensor(ids), ms.Tensor(mask)).asnumpy()
    np.testing.assert_allclose(out, torch_forward(ref[1], ids, mask), atol=ATOL, rtol=0)


def _resave(src, dst, edit):
    """Copy the text encoder folder with its state dict changed by ``edit`` (as another writer would)."""
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))


def test_loads_transformers4_layout_with_duplicated_embed_tokens(ref, rng, tmp_path):
    def add_embed_tokens(state):
        state["encoder.embed_tokens.weight"] = state["shared.weight"].clone()

    _resave(ref[0] / "text_encoder", tmp_path / "te", add_embed_tokens)
    net, _ = build_and_load(T5EncoderModel, tmp_path / "te")
    ids = token_ids(ref[1], rng)
    np.testing.assert_allclose(net(ms.Tensor(ids)).asnumpy(), torch_forward(ref[1], ids), atol=ATOL, rtol=0)


def test_loads_checkpoint_storing_only_encoder_embed_tokens(ref, rng, tmp_path):
    def rename_shared(state):
        state["encoder.embed_tokens.weight"] = state.pop("shared.weight")

    _resave(ref[0] / "text_encoder", tmp_path / "te", rename_shared)
    net, _ = build_and_load(T5EncoderModel, tmp_path / "te")
    ids = token_ids(ref[1], rng)
    np.testing.assert_allclose(net(ms.Tensor(ids)).asnumpy(), torch_forward(ref[1], ids), atol=ATOL, rtol=0)


def test_checkpoint_without_embedding_is_rejected(ref, tmp_path):
    _resave(ref[0] / "text_encoder", tmp_path / "te", lambda state: state.pop("shared.weight"))
    with pytest.raises(CheckpointError, match="shared.weight"):
        build_and_load(T5EncoderModel, tmp_path / "te")


def test_relu_feed_forward_matches_transformers(rng, tmp_path):
    pytest.importorskip("torch")
    import torch
    from transformers import T5Config
    from transformers import T5EncoderModel as Reference

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=12,
                   feed_forward_proj="relu", dropout_rate=0.0)
    reference = Reference(cfg).eval()
    reference.save_pretrained(str(tmp_path))
    net, _ = build_and_load(T5EncoderModel, tmp_path)
    ids = rng.integers(0, 50, (2, 20), dtype=np.int64)
    np.testing.assert_allclose(net(ms.Tensor(ids)).asnumpy(), torch_forward(reference, ids), atol=ATOL, rtol=0)


def test_relative_position_buckets_match_transformers_for_t5_xxl_settings():
    pytest.importorskip("torch")
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention as Reference

    offsets = np.arange(-1000, 1001)
    expected = Reference._relative_position_bucket(torch.from_numpy(offsets), True, 32, 128).numpy()
    np.testing.assert_array_equal(relative_position_buckets(offsets, 32, 128), expected)


def test_position_bias_beyond_max_distance_matches_transformers(rng):
    """The bias is looked up from a table over clipped offsets; sequences longer than it must agree."""
    pytest.importorskip("torch")
    import torch
    from transformers import T5Config
    from transformers.models.t5.modeling_t5 import T5Attention as Reference

    cfg = T5Config(d_model=8, d_kv=4, num_heads=2, relative_attention_num_buckets=32,
                   relative_attention_max_distance=128)
    reference = Reference(cfg, has_relative_attention_bias=True)
    weight = rng.standard_normal((32, 2)).astype(np.float32)
    reference.relative_attention_bias.weight.data = torch.from_numpy(weight)
    ours = T5Attention(8, 4, 2, has_relative_attention_bias=True, num_buckets=32, max_distance=128)
    ours.relative_attention_bias.weight.set_data(ms.Tensor(weight))
    with torch.no_grad():
        expected = reference.compute_bias(300, 300).numpy()
    np.testing.assert_array_equal(ours.position_bias(300).asnumpy(), expected)


def test_transformers_config_keys_are_accepted_silently(caplog):
    # a real transformers-4 config.json (google/t5-v1_1-xxl as shipped with CogVideoX), shrunk
    config = {"_name_or_path": "google/t5-v1_1-xxl", "architectures": ["T5EncoderModel"],
              "classifier_dropout": 0.0, "d_ff": 24, "d_kv": 4, "d_model": 16, "decoder_start_token_id": 0,
              "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
              "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
              "layer_norm_epsilon": 1e-06, "model_type": "t5", "num_decoder_layers": 2, "num_heads": 2,
              "num_layers": 2, "output_past": True, "pad_token_id": 0, "relative_attention_max_distance": 128,
              "relative_attention_num_buckets": 32, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
              "transformers_version": "4.41.2", "use_cache": True, "vocab_size": 40}
    with caplog.at_level(logging.WARNING):
        net = T5EncoderModel.from_config(config)
    assert not caplog.records
    names = {n for n, _ in net.parameters_and_names()}
    assert "encoder.block.1.layer.1.DenseReluDense.wi_1.weight" in names
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in names
    assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in names


def test_transformers5_config_written_by_the_fixture_is_accepted_silently(ref, caplog):
    config = json.loads((ref[0] / "text_encoder" / "config.json").read_text())
    with caplog.at_level(logging.WARNING):
        T5EncoderModel.from_config(config)
    assert not caplog.records


def test_unknown_feed_forward_proj_is_rejected():
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5EncoderModel(vocab_size=10, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2,
                       feed_forward_proj="gated-mish")
