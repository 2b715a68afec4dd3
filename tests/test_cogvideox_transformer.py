"""CogVideoX transformer: parity with diffusers' CogVideoXTransformer3DModel on tiny random-weight checkpoints.

Reference values come only from diffusers/torch; our network is loaded from the folder diffusers saved.
Tolerance: atol 1e-5 on outputs of magnitude ~2 (measured max error ~1e-6). Each side evaluates the
timestep embedding's sin/cos of arguments up to 999 in float32 with its own kernels and sums in its own
order, so bitwise equality is not expected.
"""
from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest

from toolkit.loading import build_and_load, read_state, weight_files
from toolkit.models.cogvideox.transformer import CogVideoXTransformer3DModel, rotary_tables_for

torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")

ATOL = 1e-5
TIMESTEPS = np.array([999.0, 500.0], np.float32)
TEXT_SHAPE = (2, 16, 32)  # (batch, max_text_seq_length, text_embed_dim) of the tiny reference


def _ours(folder):
    net, config = build_and_load(CogVideoXTransformer3DModel, folder, "transformer")
    return net, config


def _diffusers_rotary(pipe, latent_shape):
    """The pipeline's own rotary tables for these latents (None for sin-cos models)."""
    if not pipe.transformer.config.use_rotary_positional_embeddings:
        return None
    _, f, _, h, w = latent_shape
    return pipe._prepare_rotary_positional_embeddings(h * 8, w * 8, f, torch.device("cpu"))


def _reference(transformer, latents, text, timesteps, rotary=None, ofs=None):
    with torch.no_grad():
        out = transformer(hidden_states=torch.from_numpy(latents), encoder_hidden_states=torch.from_numpy(text),
                          timestep=torch.from_numpy(timesteps), image_rotary_emb=rotary,
                          ofs=None if ofs is None else torch.from_numpy(ofs), return_dict=False)[0]
    return out.numpy()


def _run(net, config, latents, text, timesteps, ofs=None):
    _, f, _, h, w = latents.shape
    cos, sin = rotary_tables_for(config, f, h, w)
    out = net(ms.Tensor(latents), ms.Tensor(text), ms.Tensor(timesteps), cos, sin,
              None if ofs is None else ms.Tensor(ofs))
    return out.asnumpy()


@pytest.mark.parametrize("flavour", ["2b", "5b", "1.5"])
def test_transformer_output_matches_diffusers(cogvideox_ref, rng, flavour):
    from tests.reference.cogvideox import latent_shape

    folder, pipe = cogvideox_ref(flavour)
    shape = latent_shape(pipe, batch=2)
    latents = rng.standard_normal(shape, dtype=np.float32)
    text = rng.standard_normal(TEXT_SHAPE, dtype=np.float32)
    expected = _reference(pipe.transformer, latents, text, TIMESTEPS, _diffusers_rotary(pipe, shape))

    net, config = _ours(folder)
    got = _run(net, config, latents, text, TIMESTEPS)
    assert got.shape == shape[:2] + (config["out_channels"],) + shape[3:]
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_sincos_table_is_rebuilt_for_a_latent_size_other_than_the_sample_size(cogvideox_ref, rng):
    folder, pipe = cogvideox_ref("2b")
    shape = (1, 2, 4, 6, 4)  # config sample: 3 latent frames of 4x6
    latents = rng.standard_normal(shape, dtype=np.float32)
    text = rng.standard_normal((1,) + TEXT_SHAPE[1:], dtype=np.float32)
    expected = _reference(pipe.transformer, latents, text, TIMESTEPS[:1])

    net, config = _ours(folder)
    np.testing.assert_allclose(_run(net, config, latents, text, TIMESTEPS[:1]), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("flavour,latent_hw", [("5b", (4, 6)), ("5b", (6, 4)), ("1.5", (4, 6)), ("1.5", (2, 4))])
def test_rotary_tables_equal_the_diffusers_pipeline_tables(cogvideox_ref, flavour, latent_hw):
    folder, pipe = cogvideox_ref(flavour)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    h, w = latent_hw
    frames = 4
    exp_cos, exp_sin = pipe._prepare_rotary_positional_embeddings(h * 8, w * 8, frames, torch.device("cpu"))
    cos, sin = rotary_tables_for(config, frames, h, w)
    np.testing.assert_allclose(cos.asnumpy(), exp_cos.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(sin.asnumpy(), exp_sin.numpy(), atol=1e-6, rtol=0)


def test_single_block_matches_diffusers_block(cogvideox_ref, rng):
    from tests.reference.cogvideox import latent_shape

    folder, pipe = cogvideox_ref("5b")
    shape = latent_shape(pipe, batch=2)
    n_video = shape[1] * (shape[3] // 2) * (shape[4] // 2)
    x = rng.standard_normal((2, n_video, 32), dtype=np.float32)
    c = rng.standard_normal((2, 16, 32), dtype=np.float32)
    temb = rng.standard_normal((2, 2), dtype=np.float32)
    with torch.no_grad():
        ex, ec = pipe.transformer.transformer_blocks[0](
            torch.from_numpy(x), torch.from_numpy(c), torch.from_numpy(temb), _diffusers_rotary(pipe, shape))

    net, config = _ours(folder)
    cos, sin = rotary_tables_for(config, shape[1], shape[3], shape[4])
    gx, gc = net.transformer_blocks[0](ms.Tensor(x), ms.Tensor(c), ms.Tensor(temb), cos, sin)
    np.testing.assert_allclose(gx.asnumpy(), ex.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(gc.asnumpy(), ec.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("flavour", ["2b", "5b", "1.5"])
def test_diffusers_checkpoint_fills_every_parameter_and_uses_every_key(cogvideox_ref, flavour):
    folder, _ = cogvideox_ref(flavour)
    net, _ = _ours(folder)  # build_and_load raises on missing / unexpected / mis-shaped keys
    keys = set(read_state(weight_files(folder / "transformer")))
    assert {name for name, _ in net.parameters_and_names()} == keys


def _save_tiny_i2v(tmp_path, **kw):
    """A tiny image-to-video transformer (latents + image latents = 8 input channels), saved by diffusers."""
    from diffusers import CogVideoXTransformer3DModel as Reference

    from tests.reference import cogvideox as ref

    torch.manual_seed(0)
    model = Reference(num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4,
                      time_embed_dim=2, text_embed_dim=32, num_layers=2, sample_width=ref.WIDTH // 8,
                      sample_height=ref.HEIGHT // 8, sample_frames=ref.NUM_FRAMES, patch_size=2,
                      temporal_compression_ratio=4, max_text_seq_length=ref.MAX_SEQ,
                      use_rotary_positional_embeddings=True, **kw).eval()
    if kw.get("use_learned_positional_embeddings"):
        with torch.no_grad():  # diffusers initialises it to sin-cos; make the text rows matter too
            model.patch_embed.pos_embedding.normal_()
    model.save_pretrained(str(tmp_path / "transformer"))
    return model


def _rotary_for(model, shape):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    cfg = model.config
    _, f, _, h, w = shape
    gh, gw = h // cfg.patch_size, w // cfg.patch_size
    bh, bw = cfg.sample_height // cfg.patch_size, cfg.sample_width // cfg.patch_size
    if cfg.patch_size_t is None:
        return get_3d_rotary_pos_embed(cfg.attention_head_dim, get_resize_crop_region_for_grid((gh, gw), bw, bh),
                                       (gh, gw), f)
    return get_3d_rotary_pos_embed(cfg.attention_head_dim, None, (gh, gw), f // cfg.patch_size_t,
                                   grid_type="slice", max_size=(bh, bw))


def test_ofs_embedding_of_a_15_i2v_model_matches_diffusers(tmp_path, rng):
    model = _save_tiny_i2v(tmp_path, ofs_embed_dim=2, patch_size_t=2, patch_bias=False)
    shape = (2, 4, 8, 4, 6)
    latents = rng.standard_normal(shape, dtype=np.float32)
    text = rng.standard_normal(TEXT_SHAPE, dtype=np.float32)
    ofs = np.array([2.0], np.float32)  # what diffusers' I2V pipeline passes, broadcast over the batch
    expected = _reference(model, latents, text, TIMESTEPS, _rotary_for(model, shape), ofs)

    net, config = _ours(tmp_path)
    np.testing.assert_allclose(_run(net, config, latents, text, TIMESTEPS, ofs), expected, atol=ATOL, rtol=0)


def test_learned_positional_embedding_of_a_5b_i2v_model_matches_diffusers(tmp_path, rng):
    model = _save_tiny_i2v(tmp_path, use_learned_positional_embeddings=True)
    shape = (2, 3, 8, 4, 6)  # the sample size: the learned table is used
    latents = rng.standard_normal(shape, dtype=np.float32)
    text = rng.standard_normal(TEXT_SHAPE, dtype=np.float32)
    expected = _reference(model, latents, text, TIMESTEPS, _rotary_for(model, shape))

    net, config = _ours(tmp_path)
    np.testing.assert_allclose(_run(net, config, latents, text, TIMESTEPS), expected, atol=ATOL, rtol=0)


def test_jit_compiled_forward_equals_eager_forward(cogvideox_ref, rng):
    folder, _ = cogvideox_ref("2b")
    net, config = _ours(folder)
    shape = (1, 2, 4, 6, 4)  # not the sample size: the sin-cos table is built on the host during tracing
    latents = ms.Tensor(rng.standard_normal(shape, dtype=np.float32))
    text = ms.Tensor(rng.standard_normal((1,) + TEXT_SHAPE[1:], dtype=np.float32))
    t = ms.Tensor(TIMESTEPS[:1])
    eager = net(latents, text, t).asnumpy()
    jitted = ms.jit(net.construct)(latents, text, t).asnumpy()
    np.testing.assert_allclose(jitted, eager, atol=1e-6, rtol=0)


def test_compiled_forward_with_attention_and_feed_forward_in_bands_equals_whole(cogvideox_ref, rng, monkeypatch):
    """Attention a band of queries at a time and feed-forwards a band of tokens at a time
    (layers.ATTENTION_SCORES_BYTES, layers.FEEDFORWARD_HIDDEN_BYTES, as real-size sequences run), inside the whole
    compiled transformer, give the numbers of the whole sequence at once."""
    from toolkit.models import layers

    folder, _ = cogvideox_ref("2b")
    net, config = _ours(folder)
    latents = ms.Tensor(rng.standard_normal((1, 2, 4, 6, 4), dtype=np.float32))
    text = ms.Tensor(rng.standard_normal((1,) + TEXT_SHAPE[1:], dtype=np.float32))
    t = ms.Tensor(TIMESTEPS[:1])
    whole = net(latents, text, t).asnumpy()
    monkeypatch.setattr(layers, "ATTENTION_SCORES_BYTES", 1)
    monkeypatch.setattr(layers, "FEEDFORWARD_HIDDEN_BYTES", 1)
    monkeypatch.setattr(layers, "MAX_BANDS", 5)
    assert len(layers.equal_bands(16 + 12, 2 * (16 + 12) * 4, 1, 5)) == 5  # 16 text + 2 x (2 x 3) patches
    np.testing.assert_allclose(ms.jit(net.construct)(latents, text, t).asnumpy(), whole, atol=1e-6, rtol=0)
