"""SD AutoencoderKL (toolkit/models/sd/vae.py) against diffusers' AutoencoderKL.

The diffusers VAE is built at test size (tests/reference/unet.py), saved with save_pretrained, and
ours is loaded from that folder with build_and_load (exact keys and shapes). Inputs: batch 2,
non-square images / latents. Two configurations: "sd" (2 levels, quant convs, mid-block attention,
as SD's VAE) and "variant" (3 levels, 2 resnets per level, no quant convs, no mid attention).
Tolerance: atol 1e-5, rtol 1e-5 on outputs of magnitude ~1-5 (measured differences <= 3e-6: the
frameworks sum convolutions and group norms in different orders).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")
ms = pytest.importorskip("mindspore")

from tests.reference.unet import TINY_VAE, build_vae  # noqa: E402
from toolkit.loading import build_and_load  # noqa: E402
from toolkit.models.sd.vae import AutoencoderKL  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)
CONFIGS = {
    "sd": dict(TINY_VAE, scaling_factor=0.13025),
    "variant": dict(TINY_VAE, block_out_channels=[8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 3,
                    up_block_types=["UpDecoderBlock2D"] * 3, layers_per_block=2, use_quant_conv=False,
                    use_post_quant_conv=False, mid_block_add_attention=False),
}


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """{name: (folder, diffusers model, our model)}."""
    out = {}
    for name, config in CONFIGS.items():
        folder = tmp_path_factory.mktemp(f"vae_{name}")
        ref = build_vae(folder, **config)
        net, _ = build_and_load(AutoencoderKL, folder)
        out[name] = (folder, ref, net)
    return out


def ref_posterior(ref, x, tiled=False):
    ref = copy.deepcopy(ref)
    ref.use_tiling = tiled
    with torch.no_grad():
        return ref.encode(torch.from_numpy(x)).latent_dist


def ref_decode(ref, z, tiled=False):
    ref = copy.deepcopy(ref)
    ref.use_tiling = tiled
    with torch.no_grad():
        return ref.decode(torch.from_numpy(z)).sample.numpy()


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_posterior_matches_diffusers(vaes, rng, name):
    _, ref, net = vaes[name]
    x = randn(rng, 2, 3, 32, 48)
    post, want = net.encode(ms.Tensor(x)), ref_posterior(ref, x)
    assert post.mean.shape == (2, 4, 32 // net.spatial_ratio, 48 // net.spatial_ratio)
    np.testing.assert_allclose(post.mean.asnumpy(), want.mean.numpy(), **TOL)
    np.testing.assert_allclose(post.logvar.asnumpy(), want.logvar.numpy(), **TOL)
    np.testing.assert_allclose(post.mode().asnumpy(), want.mode().numpy(), **TOL)
    noise = randn(rng, *want.mean.shape)
    np.testing.assert_allclose(post.sample(noise).asnumpy(), (want.mean + want.std * torch.from_numpy(noise)).numpy(),
                               **TOL)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decode_matches_diffusers(vaes, rng, name):
    _, ref, net = vaes[name]
    z = randn(rng, 2, 4, 6, 10)
    out = net.decode(ms.Tensor(z)).asnumpy()
    assert out.shape == (2, 3, 6 * net.spatial_ratio, 10 * net.spatial_ratio)
    np.testing.assert_allclose(out, ref_decode(ref, z), **TOL)


def test_sliced_encode_and_decode_equal_whole_batch(vaes, rng):
    _, _, net = vaes["sd"]
    x, z = randn(rng, 3, 3, 16, 24), randn(rng, 3, 4, 8, 12)
    np.testing.assert_allclose(net.decode(ms.Tensor(z), sliced=True).asnumpy(), net.decode(ms.Tensor(z)).asnumpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(net.encode(ms.Tensor(x), sliced=True).mean.asnumpy(),
                               net.encode(ms.Tensor(x)).mean.asnumpy(), rtol=0, atol=1e-6)


def test_tiled_decode_matches_diffusers_tiled_decode(vaes, rng):
    """sample_size 32 -> 16x16 latent tiles every 12 latents, blended over 8 pixels: 2 x 3 tiles."""
    _, ref, net = vaes["sd"]
    z = randn(rng, 2, 4, 20, 36)
    out = net.decode_tiled(ms.Tensor(z)).asnumpy()
    assert out.shape == (2, 3, 40, 72)
    np.testing.assert_allclose(out, ref_decode(ref, z, tiled=True), **TOL)


def test_compiled_decode_matches_diffusers_whole_and_tiled(vaes, rng):
    """What AnimateDiff decodes with by default (runtime.jit=true): ``compile_network(vae)``, also per tile."""
    from toolkit.models.base import compile_network

    _, ref, net = vaes["sd"]
    compiled = compile_network(net)
    z = randn(rng, 2, 4, 6, 10)
    out = compiled(ms.Tensor(z)).asnumpy()
    np.testing.assert_allclose(out, ref_decode(ref, z), **TOL)
    np.testing.assert_allclose(out, net.decode(ms.Tensor(z)).asnumpy(), rtol=0, atol=1e-6)
    z = randn(rng, 1, 4, 20, 36)
    np.testing.assert_allclose(net.decode_tiled(ms.Tensor(z), forward=compiled).asnumpy(),
                               ref_decode(ref, z, tiled=True), **TOL)


def test_tiled_encode_matches_diffusers_tiled_encode(vaes, rng):
    _, ref, net = vaes["sd"]
    x = randn(rng, 2, 3, 40, 72)
    post, want = net.encode_tiled(ms.Tensor(x)), ref_posterior(ref, x, tiled=True)
    assert post.mean.shape == (2, 4, 20, 36)
    np.testing.assert_allclose(post.mean.asnumpy(), want.mean.numpy(), **TOL)
    np.testing.assert_allclose(post.logvar.asnumpy(), want.logvar.numpy(), **TOL)


def test_tiled_decode_of_a_latent_within_one_tile_is_the_plain_decode(vaes, rng):
    _, _, net = vaes["sd"]
    z = randn(rng, 1, 4, 16, 12)
    np.testing.assert_array_equal(net.decode_tiled(ms.Tensor(z)).asnumpy(), net.decode(ms.Tensor(z)).asnumpy())


def test_tile_size_that_would_leave_gaps_is_refused(vaes, rng):
    """36-pixel tiles: latent tiles of 18 every 13 latents (26 pixels) but 27 pixels kept per tile;
    diffusers would return an image of the wrong size."""
    _, _, net = vaes["sd"]
    with pytest.raises(ValueError, match="tiling height"):
        net.decode_tiled(ms.Tensor(randn(rng, 1, 4, 24, 24)), tile_sample_min_size=36)


def test_scaling_factor_comes_from_the_config(vaes):
    _, _, net = vaes["sd"]
    assert net.scaling_factor == 0.13025 and net.shift_factor is None


def test_checkpoint_with_pre_0_14_attention_names_loads(vaes, tmp_path, rng):
    """Old VAE checkpoints call the mid-block attention query/key/value/proj_attn; diffusers renames them on load."""
    folder, _, net = vaes["sd"]
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for key, value in load_file(str(folder / "diffusion_pytorch_model.safetensors")).items():
        for new_name, old_name in renames.items():
            key = key.replace(f"attentions.0.{new_name}.", f"attentions.0.{old_name}.")
        old[key] = value
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in old
    save_file(old, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    old_net, _ = build_and_load(AutoencoderKL, tmp_path)
    z = randn(rng, 1, 4, 4, 6)
    np.testing.assert_array_equal(old_net.decode(ms.Tensor(z)).asnumpy(), net.decode(ms.Tensor(z)).asnumpy())
