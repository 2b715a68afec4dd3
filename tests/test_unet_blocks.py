"""Shared UNet blocks (toolkit/models/unet_blocks.py) against the diffusers modules they port.

Each test builds the diffusers block with random weights (norm weights randomised too), copies its
state dict into ours through the toolkit's exact-key loader (a missing or extra parameter fails),
and compares outputs on the same numpy inputs: batch 2, non-square feature maps.
Tolerance: atol 1e-5, rtol 1e-5 on outputs of magnitude ~1-5 (measured differences <= 1.2e-6: the two
frameworks sum convolutions, group norms and softmaxes in different orders).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")
ms = pytest.importorskip("mindspore")

from diffusers.models import attention as d_attention  # noqa: E402
from diffusers.models import attention_processor as d_processor  # noqa: E402
from diffusers.models import downsampling as d_down  # noqa: E402
from diffusers.models import embeddings as d_emb  # noqa: E402
from diffusers.models import resnet as d_resnet  # noqa: E402
from diffusers.models import upsampling as d_up  # noqa: E402
from diffusers.models.transformers.transformer_2d import Transformer2DModel as DTransformer2DModel  # noqa: E402
from diffusers.models.unets import unet_2d_blocks as d_blocks  # noqa: E402

from tests.reference.unet import load_from_torch, run  # noqa: E402
from toolkit.loading import build_and_load  # noqa: E402
from toolkit.models import layers  # noqa: E402
from toolkit.models import unet_blocks as ub  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)
T = ms.Tensor


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- resnet / resampling


@pytest.mark.parametrize("time_embedding_norm", ["default", "scale_shift"])
def test_resnet_block_with_channel_change_matches_diffusers(tmp_path, rng, time_embedding_norm):
    kw = dict(in_channels=8, out_channels=16, temb_channels=32, groups=4, eps=1e-6,
              time_embedding_norm=time_embedding_norm, output_scale_factor=2.0)
    ref = d_resnet.ResnetBlock2D(**kw).eval()
    net = load_from_torch(ub.ResnetBlock2D(**kw), ref, tmp_path)
    assert net.conv_shortcut is not None  # 1x1 projection of the input: 8 -> 16 channels
    x, temb = randn(rng, 2, 8, 6, 10), randn(rng, 2, 32)
    np.testing.assert_allclose(net(T(x), T(temb)).asnumpy(), run(ref, x, temb), **TOL)


def test_resnet_block_without_time_embedding_matches_diffusers(tmp_path, rng):
    kw = dict(in_channels=8, out_channels=8, temb_channels=None, groups=2, groups_out=4)
    ref = d_resnet.ResnetBlock2D(**kw).eval()
    net = load_from_torch(ub.ResnetBlock2D(**kw), ref, tmp_path)
    assert net.conv_shortcut is None and net.time_emb_proj is None
    x = randn(rng, 2, 8, 5, 7)
    np.testing.assert_allclose(net(T(x)).asnumpy(), run(ref, x, None), **TOL)


@pytest.mark.parametrize("padding,out_size", [(0, (4, 6)), (1, (5, 6))])
def test_downsample_conv_matches_diffusers_for_both_paddings(tmp_path, rng, padding, out_size):
    """padding=0 (the VAE encoder) pads one row/column at the bottom/right only."""
    ref = d_down.Downsample2D(4, use_conv=True, out_channels=6, padding=padding, name="op").eval()
    net = load_from_torch(ub.Downsample2D(4, use_conv=True, out_channels=6, padding=padding, name="op"), ref, tmp_path)
    x = randn(rng, 2, 4, 9, 12)
    out = net(T(x)).asnumpy()
    assert out.shape == (2, 6, *out_size)
    np.testing.assert_allclose(out, run(ref, x), **TOL)


def test_downsample_average_pool_floors_odd_sizes_like_diffusers(rng):
    x = randn(rng, 2, 3, 7, 10)
    out = ub.Downsample2D(3)(T(x)).asnumpy()
    assert out.shape == (2, 3, 3, 5)
    np.testing.assert_allclose(out, run(d_down.Downsample2D(3), x), **TOL)


@pytest.mark.parametrize("output_size", [None, (9, 13)])
def test_upsample_nearest_then_conv_matches_diffusers(tmp_path, rng, output_size):
    ref = d_up.Upsample2D(4, use_conv=True, out_channels=6).eval()
    net = load_from_torch(ub.Upsample2D(4, use_conv=True, out_channels=6), ref, tmp_path)
    x = randn(rng, 2, 4, 5, 7)
    out = net(T(x), output_size).asnumpy()
    assert out.shape[2:] == (output_size or (10, 14))
    np.testing.assert_allclose(out, run(ref, x, output_size), **TOL)


# ----------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("flip_sin_to_cos,shift", [(True, 0), (False, 1)])
def test_timesteps_embedding_matches_diffusers(flip_sin_to_cos, shift):
    t = np.array([999.0, 500.5, 1.0, 0.0], np.float32)
    out = ub.Timesteps(32, flip_sin_to_cos, shift)(T(t)).asnumpy()
    want = run(d_emb.Timesteps(32, flip_sin_to_cos, shift), t)
    # sin/cos of float32 arguments up to 999 (frequency x t rounded to ~6e-5): measured difference 1.5e-5
    np.testing.assert_allclose(out, want, rtol=0, atol=5e-5)


def test_sinusoidal_positions_equal_diffusers_buffer():
    want = d_emb.SinusoidalPositionalEmbedding(16, max_seq_length=24).pe.numpy()
    np.testing.assert_allclose(ub.sinusoidal_positions(16, 24), want, rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------- attention / transformers


def test_feedforward_geglu_projects_to_twice_the_inner_width(tmp_path, rng):
    ref = d_attention.FeedForward(16, activation_fn="geglu").eval()
    net = load_from_torch(ub.FeedForward(16, activation_fn="geglu"), ref, tmp_path)
    assert tuple(net.net[0].proj.weight.shape) == (128, 16)
    x = randn(rng, 2, 5, 16)
    np.testing.assert_allclose(net(T(x)).asnumpy(), run(ref, x), **TOL)


@pytest.mark.parametrize("budget, bands", [(10 ** 9, 1), (3 * 128 * 4, 4), (1, 10)])
def test_feedforward_in_bands_of_rows_matches_diffusers(tmp_path, rng, monkeypatch, budget, bands):
    """A hidden activation over FEEDFORWARD_HIDDEN_BYTES is computed a band of rows (tokens) at a time: 10 rows
    of 128 hidden floats in 1, 4 (3 rows' worth a band) or 10 bands, compiled as eagerly."""
    monkeypatch.setattr(layers, "FEEDFORWARD_HIDDEN_BYTES", budget)
    assert len(layers.equal_bands(2 * 5, 128 * 4, budget)) == bands
    ref = d_attention.FeedForward(16, activation_fn="geglu").eval()
    net = load_from_torch(ub.FeedForward(16, activation_fn="geglu"), ref, tmp_path)
    x = randn(rng, 2, 5, 16)
    np.testing.assert_allclose(net(T(x)).asnumpy(), run(ref, x), **TOL)
    np.testing.assert_allclose(ms.jit(net.construct)(T(x)).asnumpy(), run(ref, x), **TOL)


def test_group_norm_attention_matches_diffusers_vae_attention(tmp_path, rng):
    kw = dict(heads=2, dim_head=8, bias=True, norm_num_groups=4, eps=1e-6, residual_connection=True,
              rescale_output_factor=2.0)
    ref = d_processor.Attention(16, upcast_softmax=True, **kw).eval()
    net = load_from_torch(ub.GroupNormAttention(16, **kw), ref, tmp_path)
    x = randn(rng, 2, 16, 3, 5)
    np.testing.assert_allclose(net(T(x)).asnumpy(), run(ref, x), **TOL)


def test_basic_transformer_block_with_cross_attention_matches_diffusers(tmp_path, rng):
    ref = d_attention.BasicTransformerBlock(16, 2, 8, cross_attention_dim=24).eval()
    net = load_from_torch(ub.BasicTransformerBlock(16, 2, 8, cross_attention_dim=24), ref, tmp_path)
    x, ctx = randn(rng, 2, 15, 16), randn(rng, 2, 7, 24)
    np.testing.assert_allclose(net(T(x), T(ctx)).asnumpy(), run(ref, x, encoder_hidden_states=ctx), **TOL)


def test_basic_transformer_block_as_animatediff_motion_block_matches_diffusers(tmp_path, rng):
    """double self-attention, sinusoidal positions (loaded from the checkpoint's ``pos_embed.pe``), bias."""
    kw = dict(cross_attention_dim=None, double_self_attention=True, attention_bias=True,
              positional_embeddings="sinusoidal", num_positional_embeddings=24)
    ref = d_attention.BasicTransformerBlock(16, 2, 8, **kw).eval()
    net = load_from_torch(ub.BasicTransformerBlock(16, 2, 8, **kw), ref, tmp_path)
    x = randn(rng, 3, 6, 16)  # (batch * pixels, frames, channels)
    np.testing.assert_allclose(net(T(x)).asnumpy(), run(ref, x), **TOL)


def test_basic_transformer_block_only_cross_attention_matches_diffusers(tmp_path, rng):
    kw = dict(cross_attention_dim=24, only_cross_attention=True, activation_fn="gelu")
    ref = d_attention.BasicTransformerBlock(16, 2, 8, **kw).eval()
    net = load_from_torch(ub.BasicTransformerBlock(16, 2, 8, **kw), ref, tmp_path)
    x, ctx = randn(rng, 2, 6, 16), randn(rng, 2, 4, 24)
    np.testing.assert_allclose(net(T(x), T(ctx)).asnumpy(), run(ref, x, encoder_hidden_states=ctx), **TOL)


@pytest.mark.parametrize("use_linear_projection", [False, True])
def test_transformer_2d_model_loads_from_its_saved_folder_and_matches_diffusers(tmp_path, rng, use_linear_projection):
    ref = DTransformer2DModel(num_attention_heads=2, attention_head_dim=4, in_channels=8, num_layers=2,
                              norm_num_groups=4, cross_attention_dim=24,
                              use_linear_projection=use_linear_projection).eval()
    ref.save_pretrained(str(tmp_path))
    net, _ = build_and_load(ub.Transformer2DModel, tmp_path)
    x, ctx = randn(rng, 2, 8, 3, 5), randn(rng, 2, 7, 24)
    want = run(ref, x, encoder_hidden_states=ctx, return_dict=False)[0]
    np.testing.assert_allclose(net(T(x), T(ctx)).asnumpy(), want, **TOL)


# ----------------------------------------------------------------------------- UNet blocks

BLOCK = dict(temb_channels=32, resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=2)


def test_cross_attn_down_block_returns_diffusers_hidden_states_and_skips(tmp_path, rng):
    kw = dict(in_channels=4, out_channels=8, num_layers=2, num_attention_heads=2, cross_attention_dim=24,
              transformer_layers_per_block=(1, 2), **BLOCK)
    ref = d_blocks.CrossAttnDownBlock2D(**kw).eval()
    net = load_from_torch(ub.CrossAttnDownBlock2D(**kw), ref, tmp_path)
    x, temb, ctx = randn(rng, 2, 4, 6, 10), randn(rng, 2, 32), randn(rng, 2, 7, 24)
    h, skips = net(T(x), T(temb), T(ctx))
    want_h, want_skips = run(ref, x, temb, encoder_hidden_states=ctx)
    assert [s.shape for s in skips] == [(2, 8, 6, 10), (2, 8, 6, 10), (2, 8, 3, 5)]
    np.testing.assert_allclose(h.asnumpy(), want_h, **TOL)
    assert len(skips) == len(want_skips)
    for got, want in zip(skips, want_skips):
        np.testing.assert_allclose(got.asnumpy(), want, **TOL)


def test_down_block_without_downsampler_matches_diffusers(tmp_path, rng):
    kw = dict(in_channels=8, out_channels=8, num_layers=2, add_downsample=False, **BLOCK)
    ref = d_blocks.DownBlock2D(**kw).eval()
    net = load_from_torch(ub.DownBlock2D(**kw), ref, tmp_path)
    x, temb = randn(rng, 2, 8, 3, 5), randn(rng, 2, 32)
    h, skips = net(T(x), T(temb))
    want_h, want_skips = run(ref, x, temb)
    assert len(skips) == 2
    np.testing.assert_allclose(h.asnumpy(), want_h, **TOL)
    np.testing.assert_allclose(skips[0].asnumpy(), want_skips[0], **TOL)


def test_cross_attn_up_block_consumes_skips_from_the_end_like_diffusers(tmp_path, rng):
    """3 resnets: skips are concatenated last-first; channel counts differ per skip (8, 8, 4)."""
    kw = dict(in_channels=4, out_channels=8, prev_output_channel=16, num_layers=3, num_attention_heads=2,
              cross_attention_dim=24, **BLOCK)
    ref = d_blocks.CrossAttnUpBlock2D(**kw).eval()
    net = load_from_torch(ub.CrossAttnUpBlock2D(**kw), ref, tmp_path)
    x, temb, ctx = randn(rng, 2, 16, 3, 5), randn(rng, 2, 32), randn(rng, 2, 7, 24)
    skips = (randn(rng, 2, 4, 3, 5), randn(rng, 2, 8, 3, 5), randn(rng, 2, 8, 3, 5))
    out = net(T(x), tuple(T(s) for s in skips), T(temb), T(ctx), (7, 11)).asnumpy()
    want = run(ref, x, tuple(torch.from_numpy(s) for s in skips), temb, encoder_hidden_states=ctx,
               upsample_size=(7, 11))
    assert out.shape == (2, 8, 7, 11)
    np.testing.assert_allclose(out, want, **TOL)


def test_up_block_matches_diffusers(tmp_path, rng):
    kw = dict(in_channels=8, out_channels=8, prev_output_channel=8, num_layers=2, **BLOCK)
    ref = d_blocks.UpBlock2D(**kw).eval()
    net = load_from_torch(ub.UpBlock2D(**kw), ref, tmp_path)
    x, temb = randn(rng, 2, 8, 3, 5), randn(rng, 2, 32)
    skips = (randn(rng, 2, 8, 3, 5), randn(rng, 2, 8, 3, 5))
    out = net(T(x), tuple(T(s) for s in skips), T(temb)).asnumpy()
    np.testing.assert_allclose(out, run(ref, x, tuple(torch.from_numpy(s) for s in skips), temb), **TOL)


def test_mid_block_cross_attn_matches_diffusers(tmp_path, rng):
    kw = dict(in_channels=8, num_attention_heads=2, cross_attention_dim=24, output_scale_factor=1.5, **BLOCK)
    ref = d_blocks.UNetMidBlock2DCrossAttn(**kw).eval()
    net = load_from_torch(ub.UNetMidBlock2DCrossAttn(**kw), ref, tmp_path)
    x, temb, ctx = randn(rng, 2, 8, 3, 5), randn(rng, 2, 32), randn(rng, 2, 7, 24)
    np.testing.assert_allclose(net(T(x), T(temb), T(ctx)).asnumpy(), run(ref, x, temb, encoder_hidden_states=ctx),
                               **TOL)


def test_vae_mid_block_with_attention_matches_diffusers(tmp_path, rng):
    kw = dict(in_channels=16, temb_channels=None, resnet_groups=4, attention_head_dim=16)
    ref = d_blocks.UNetMidBlock2D(**kw).eval()
    net = load_from_torch(ub.UNetMidBlock2D(**kw), ref, tmp_path)
    x = randn(rng, 2, 16, 4, 6)
    np.testing.assert_allclose(net(T(x)).asnumpy(), run(ref, x), **TOL)


# ----------------------------------------------------------------------------- refused options


@pytest.mark.parametrize("make,key", [
    (lambda: ub.BasicTransformerBlock(16, 2, 8, norm_type="ada_norm_zero", num_embeds_ada_norm=10), "norm_type"),
    (lambda: ub.Transformer2DModel(2, 4, in_channels=8, norm_num_groups=4, patch_size=2), "patch_size"),
    (lambda: ub.CrossAttnDownBlock2D(4, 8, 32, resnet_groups=2, dual_cross_attention=True), "dual_cross_attention"),
    (lambda: ub.ResnetBlock2D(in_channels=4, groups=2, up=True), "up"),
    (lambda: ub.Upsample2D(4, use_conv_transpose=True), "use_conv_transpose"),
])
def test_unsupported_architecture_options_are_refused_by_name(make, key):
    with pytest.raises(ValueError, match=key):
        make()
