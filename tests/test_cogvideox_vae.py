"""CogVideoX VAE (toolkit/models/cogvideox/vae.py) against diffusers' AutoencoderKLCogVideoX.

Our network is loaded with build_and_load from the folder diffusers saved; reference values come
from the diffusers VAE on the same numpy inputs. Tolerance: rtol 1e-5, atol 3e-5 on outputs up to ~5
(measured differences up to 1.5e-5 in decodes: MindSpore's CPU conv3d sums in a different order than
torch and ~30 conv + group-norm layers amplify it; posteriors differ by <= 2e-6).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from toolkit.loading import build_and_load
from toolkit.models.causal_conv import CausalConv3d, SafeConv3d, frame_chunks
from toolkit.models.cogvideox.vae import AutoencoderKLCogVideoX

TOL = dict(rtol=1e-5, atol=3e-5)
# 48x40-pixel tiles (6x5 latents): with the default overlaps the tiles cover the output exactly
TILING = dict(tile_sample_min_height=48, tile_sample_min_width=40)

torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
ms = pytest.importorskip("mindspore")


@pytest.fixture(scope="module")
def vaes(cogvideox_ref):
    folder, pipe = cogvideox_ref("5b")
    net, _ = build_and_load(AutoencoderKLCogVideoX, folder, "vae")
    return net, pipe.vae.eval()


def ref_decode(ref, z, **tiling):
    ref = copy.deepcopy(ref)  # enable_tiling mutates the module; keep the session pipeline untouched
    if tiling:
        ref.enable_tiling(**tiling)
    with torch.no_grad():
        return ref.decode(torch.from_numpy(z)).sample.numpy()


def ref_posterior(ref, x, **tiling):
    ref = copy.deepcopy(ref)
    if tiling:
        ref.enable_tiling(**tiling)
    with torch.no_grad():
        return ref.encode(torch.from_numpy(x)).latent_dist


def test_decode_matches_diffusers(vaes, rng):
    net, ref = vaes
    z = rng.standard_normal((1, 4, 3, 4, 6)).astype(np.float32)
    out = net.decode(ms.Tensor(z)).asnumpy()
    assert out.shape == (1, 3, 9, 32, 48)
    np.testing.assert_allclose(out, ref_decode(ref, z), **TOL)


def test_decode_in_frame_chunks_matches_diffusers_for_five_latent_frames(vaes, rng):
    """5 latent frames decode as chunks (0:3) then (3:5), the conv cache carried between them: 9 + 8 frames."""
    net, ref = vaes
    assert frame_chunks(5, net.num_latent_frames_batch_size) == [(0, 3), (3, 5)]
    assert net.num_frames(5) == 17
    z = rng.standard_normal((1, 4, 5, 2, 3)).astype(np.float32)
    out = net.decode(ms.Tensor(z)).asnumpy()
    assert out.shape == (1, 3, 17, 16, 24)
    np.testing.assert_allclose(out, ref_decode(ref, z), **TOL)


def test_decode_frames_returns_the_conv_cache_diffusers_carries_to_the_next_chunk(vaes, rng):
    net, ref = vaes
    z = rng.standard_normal((1, 4, 3, 2, 3)).astype(np.float32)
    _, cache = net.decode_frames(ms.Tensor(z))
    with torch.no_grad():
        _, ref_cache = ref.decoder(torch.from_numpy(z))

    def leaves(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            elif v is not None:
                yield f"{prefix}{k}", v

    ours = dict(leaves(cache))
    theirs = {k: v.numpy() for k, v in leaves(ref_cache) if v.shape[2] == 2}  # kernel-3 convs keep 2 frames
    # diffusers also stores the whole input of kernel-1 convs, which it never reads; we store nothing for them
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        np.testing.assert_allclose(ours[k].asnumpy(), theirs[k], **TOL, err_msg=k)


def test_decode_tiled_matches_diffusers_tiled_decode(vaes, rng):
    net, ref = vaes
    z = rng.standard_normal((1, 4, 3, 8, 10)).astype(np.float32)  # 2 x 3 overlapping 6x5 latent tiles
    out = net.decode_tiled(ms.Tensor(z), **TILING).asnumpy()
    assert out.shape == (1, 3, 9, 64, 80)
    np.testing.assert_allclose(out, ref_decode(ref, z, **TILING), **TOL)


def test_encode_posterior_matches_diffusers(vaes, rng):
    net, ref = vaes
    x = rng.standard_normal((1, 3, 9, 32, 48)).astype(np.float32)
    post, want = net.encode(ms.Tensor(x)), ref_posterior(ref, x)
    assert post.mode().shape == (1, 4, 3, 4, 6)
    np.testing.assert_allclose(post.mode().asnumpy(), want.mode().numpy(), **TOL)
    np.testing.assert_allclose(post.logvar.asnumpy(), want.logvar.numpy(), **TOL)
    noise = rng.standard_normal(want.mean.shape).astype(np.float32)
    np.testing.assert_allclose(post.sample(noise).asnumpy(), (want.mean + want.std * torch.from_numpy(noise)).numpy(),
                               **TOL)


def test_encode_in_frame_chunks_matches_diffusers_for_seventeen_frames(vaes, rng):
    """17 frames encode as chunks (0:9) then (9:17): 3 + 2 latent frames."""
    net, ref = vaes
    x = rng.standard_normal((1, 3, 17, 16, 16)).astype(np.float32)
    post, want = net.encode(ms.Tensor(x)), ref_posterior(ref, x)
    assert post.mode().shape == (1, 4, 5, 2, 2)
    np.testing.assert_allclose(post.mode().asnumpy(), want.mode().numpy(), **TOL)
    np.testing.assert_allclose(post.logvar.asnumpy(), want.logvar.numpy(), **TOL)


def test_encode_tiled_matches_diffusers_tiled_encode(vaes, rng):
    net, ref = vaes
    x = rng.standard_normal((1, 3, 1, 64, 80)).astype(np.float32)  # 2 x 3 overlapping 48x40 sample tiles
    post, want = net.encode_tiled(ms.Tensor(x), **TILING), ref_posterior(ref, x, **TILING)
    assert post.mode().shape == (1, 4, 1, 8, 10)
    np.testing.assert_allclose(post.mode().asnumpy(), want.mode().numpy(), **TOL)
    np.testing.assert_allclose(post.logvar.asnumpy(), want.logvar.numpy(), **TOL)


def test_blocks_that_change_width_use_a_1x1_shortcut_conv(tmp_path, rng):
    """The tiny fixture VAE keeps 8 channels throughout; real ones widen (128, 256, 256, 512)."""
    from diffusers import AutoencoderKLCogVideoX as Ref

    torch.manual_seed(0)
    ref = Ref(block_out_channels=(8, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4,
              temporal_compression_ratio=2, down_block_types=("CogVideoXDownBlock3D",) * 2,
              up_block_types=("CogVideoXUpBlock3D",) * 2).eval()
    ref.save_pretrained(str(tmp_path / "vae"))
    net, _ = build_and_load(AutoencoderKLCogVideoX, tmp_path, "vae")
    assert isinstance(net.decoder.up_blocks[1].resnets[0].conv_shortcut, SafeConv3d)
    x = rng.standard_normal((1, 3, 3, 8, 8)).astype(np.float32)
    post, want = net.encode(ms.Tensor(x)), ref_posterior(ref, x)
    np.testing.assert_allclose(post.mode().asnumpy(), want.mode().numpy(), **TOL)
    z = rng.standard_normal((1, 4, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(net.decode(ms.Tensor(z)).asnumpy(), ref_decode(ref, z), **TOL)


def _copy_weights(ours, theirs):
    params = dict(ours.parameters_and_names())
    for name, value in theirs.state_dict().items():
        params[name].set_data(ms.Tensor(value.numpy()))


@pytest.mark.parametrize("pad_mode", ["first", "replicate"])
def test_causal_conv_matches_diffusers_with_and_without_a_cache(pad_mode, rng):
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXCausalConv3d

    torch.manual_seed(0)
    ref = CogVideoXCausalConv3d(3, 5, kernel_size=3, pad_mode="constant" if pad_mode == "first" else pad_mode)
    ours = CausalConv3d(3, 5, 3, time_pad=pad_mode)
    _copy_weights(ours, ref)
    a, b = (rng.standard_normal((1, 3, n, 5, 6)).astype(np.float32) for n in (3, 2))
    with torch.no_grad():
        ya, cache = ref(torch.from_numpy(a))
        yb, _ = ref(torch.from_numpy(b), conv_cache=cache)
    oa, our_cache = ours(ms.Tensor(a))
    ob, _ = ours(ms.Tensor(b), our_cache)
    np.testing.assert_allclose(oa.asnumpy(), ya.numpy(), **TOL)
    np.testing.assert_allclose(ob.asnumpy(), yb.numpy(), **TOL)


def test_safe_conv_split_in_time_equals_the_unsplit_conv(rng):
    conv = SafeConv3d(2, 3, 3)
    x = ms.Tensor(rng.standard_normal((1, 2, 7, 4, 4)).astype(np.float32))
    whole = conv(x).asnumpy()
    conv.max_gib = 1.6e-7  # the input counts 4.2e-7 GiB -> 3 chunks: frames 0:3, 1:6 (2 carried over), 4:7
    np.testing.assert_allclose(conv(x).asnumpy(), whole, rtol=1e-6, atol=1e-6)
