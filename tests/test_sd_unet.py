"""SD UNet2DConditionModel (toolkit/models/sd/unet.py) against diffusers' UNet2DConditionModel.

The diffusers model is built with diffusers' test sizes (tests/reference/unet.py), saved with
save_pretrained, and ours is loaded from that folder with build_and_load (which fails on any
missing, unexpected or mis-shaped key). Inputs: batch 2, non-square latents, timesteps 999 and 10.
Tolerance: atol 1e-5, rtol 1e-5 on outputs of magnitude ~2 (measured differences <= 1.6e-6; the
frameworks sum convolutions / norms / softmax in different orders and evaluate sin/cos of t=999 with
their own kernels).
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")
ms = pytest.importorskip("mindspore")

from tests.reference.unet import TINY_UNET, TINY_UNET_3, build_unet, run  # noqa: E402
from toolkit.loading import CheckpointError, build_and_load  # noqa: E402
from toolkit.models.sd.unet import UNet2DConditionModel  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)
TIMESTEPS = np.array([999.0, 10.0], np.float32)


@pytest.fixture(scope="module")
def unets(tmp_path_factory):
    """{name: (folder, diffusers model, our model)} for the 2- and 3-level tiny UNets."""
    out = {}
    for name, config in (("2-level", TINY_UNET), ("3-level", TINY_UNET_3)):
        folder = tmp_path_factory.mktemp(f"unet_{name}")
        ref = build_unet(folder, **config)
        net, _ = build_and_load(UNet2DConditionModel, folder)
        out[name] = (folder, ref, net)
    return out


def _inputs(rng, height, width):
    return (rng.standard_normal((2, 4, height, width)).astype(np.float32),
            rng.standard_normal((2, 7, 32)).astype(np.float32))


def _ours(net, x, t, ctx):
    return net(ms.Tensor(x), ms.Tensor(t), ms.Tensor(ctx)).asnumpy()


@pytest.mark.parametrize("name", ["2-level", "3-level"])
def test_unet_output_matches_diffusers(unets, rng, name):
    _, ref, net = unets[name]
    x, ctx = _inputs(rng, 16, 24)
    out = _ours(net, x, TIMESTEPS, ctx)
    assert out.shape == (2, 4, 16, 24)
    np.testing.assert_allclose(out, run(ref, x, TIMESTEPS, ctx, return_dict=False)[0], **TOL)


@pytest.mark.parametrize("name", ["2-level", "3-level"])
def test_unet_on_sizes_not_divisible_by_the_upsampling_factor_matches_diffusers(unets, rng, name):
    """15x21 latents: each upsampler resizes to its skip tensor's size (diffusers' forward_upsample_size)."""
    _, ref, net = unets[name]
    x, ctx = _inputs(rng, 15, 21)
    out = _ours(net, x, TIMESTEPS, ctx)
    assert out.shape == (2, 4, 15, 21)
    np.testing.assert_allclose(out, run(ref, x, TIMESTEPS, ctx, return_dict=False)[0], **TOL)


def test_one_timestep_is_broadcast_over_the_batch(unets, rng):
    _, _, net = unets["2-level"]
    x, ctx = _inputs(rng, 8, 8)
    once = _ours(net, x, np.array([500.0], np.float32), ctx)
    np.testing.assert_allclose(once, _ours(net, x, np.array([500.0, 500.0], np.float32), ctx), rtol=0, atol=1e-6)


def test_jit_compiled_forward_matches_eager(unets, rng):
    _, _, net = unets["2-level"]
    x, ctx = _inputs(rng, 16, 24)
    jitted = ms.jit(net.construct)
    out = jitted(ms.Tensor(x), ms.Tensor(TIMESTEPS), ms.Tensor(ctx)).asnumpy()
    np.testing.assert_allclose(out, _ours(net, x, TIMESTEPS, ctx), rtol=0, atol=1e-5)


def test_diffusers_config_is_read_without_unknown_keys(unets, caplog):
    folder, _, _ = unets["3-level"]
    config = json.loads((folder / "config.json").read_text())
    with caplog.at_level(logging.WARNING):
        net = UNet2DConditionModel.from_config(config)
    assert "ignores config keys" not in caplog.text
    # diffusers' quirk: attention_head_dim counts heads; 2 heads of width 4 in the middle level
    attn = net.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert (attn.heads, attn.dim_head) == (2, 4)


@pytest.mark.parametrize("key,value", [
    ("class_embed_type", "timestep"),
    ("addition_embed_type", "text_time"),
    ("time_cond_proj_dim", 8),
    ("encoder_hid_dim", 16),
    ("num_attention_heads", 2),
])
def test_config_keys_that_change_the_network_are_refused_by_name(key, value):
    config = dict(TINY_UNET, **{key: value})
    with pytest.raises(ValueError, match=f"{key}={value!r}"):
        UNet2DConditionModel.from_config(config)


def test_unsupported_block_type_is_refused_by_name():
    config = dict(TINY_UNET, down_block_types=("SimpleCrossAttnDownBlock2D", "DownBlock2D"))
    with pytest.raises(ValueError, match="down_block_types.*SimpleCrossAttnDownBlock2D"):
        UNet2DConditionModel.from_config(config)


def test_checkpoint_missing_a_weight_fails_to_load_naming_it(unets, tmp_path):
    folder, _, _ = unets["2-level"]
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    del state["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="attn2.to_k.weight"):
        build_and_load(UNet2DConditionModel, tmp_path)
