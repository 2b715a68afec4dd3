"""AnimateDiff's networks (toolkit/models/animatediff) against diffusers.

The motion module is compared with diffusers' AnimateDiffTransformer3D on the same weights; the motion UNet,
loaded here from the two checkpoints diffusers saved (the SD UNet folder and the MotionAdapter folder), with
diffusers' ``UNetMotionModel.from_unet2d(unet, motion_adapter)`` (what AnimateDiffPipeline runs). Inputs: batch
2, 5 frames, non-square latents, timesteps 999 and 10.

Tolerance: atol 1e-5, rtol 1e-5 on outputs of magnitude ~2 (measured differences <= 1e-6; the frameworks sum
convolutions, norms and softmax in different orders and evaluate sin/cos of t=999 with their own kernels).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
pytest.importorskip("diffusers", reason="diffusers (test-only reference) is not installed")
ms = pytest.importorskip("mindspore")

from tests.reference.unet import load_from_torch, run  # noqa: E402
from toolkit.loading import build_and_load, read_config  # noqa: E402
from toolkit.models.animatediff import (AdapterMismatch, AnimateDiffTransformer3D, MotionAdapter,  # noqa: E402
                                        load_motion_unet, motion_unet_config)
from toolkit.models.sd.unet import UNet2DConditionModel  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)
FRAMES = 5
TIMESTEPS = np.array([999.0, 10.0], np.float32)


@pytest.fixture(scope="module")
def motion_unet(animatediff_ref):
    base, adapter, _ = animatediff_ref
    return load_motion_unet(base / "unet", adapter)[0]


def _inputs(rng, height=8, width=6, frames=FRAMES):
    return (rng.standard_normal((2, 4, frames, height, width)).astype(np.float32),
            rng.standard_normal((2, 7, 32)).astype(np.float32))


def _ours(net, x, ctx, t=TIMESTEPS):
    return net(ms.Tensor(x), ms.Tensor(t), ms.Tensor(ctx)).asnumpy()


def _diffusers(unet, x, ctx, t=TIMESTEPS):
    """diffusers' motion UNet takes the text states repeated per frame, as AnimateDiffPipeline passes them."""
    ctx_frames = np.repeat(ctx, x.shape[2], axis=0)
    return run(unet, x, t, ctx_frames, return_dict=False)[0]


def test_motion_module_matches_diffusers(rng, tmp_path):
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D as Reference

    kw = dict(num_attention_heads=2, attention_head_dim=8, in_channels=16, num_layers=2, norm_num_groups=4,
              activation_fn="geglu", positional_embeddings="sinusoidal", num_positional_embeddings=24,
              double_self_attention=True)
    torch.manual_seed(0)
    ref = Reference(**kw).eval()
    net = load_from_torch(AnimateDiffTransformer3D(**kw), ref, tmp_path)
    x = rng.standard_normal((2 * 6, 16, 5, 3)).astype(np.float32)  # (B * F, C, H, W), 6 frames
    out = net(ms.Tensor(x), 6).asnumpy()
    np.testing.assert_allclose(out, run(ref, x, num_frames=6), **TOL)


def test_motion_unet_matches_diffusers_from_unet2d(animatediff_ref, motion_unet, rng):
    x, ctx = _inputs(rng)
    out = _ours(motion_unet, x, ctx)
    assert out.shape == (2, 4, FRAMES, 8, 6)
    np.testing.assert_allclose(out, _diffusers(animatediff_ref[2].unet, x, ctx), **TOL)


def test_motion_unet_matches_diffusers_on_sizes_the_upsamplers_must_fit(animatediff_ref, motion_unet, rng):
    x, ctx = _inputs(rng, height=7, width=5, frames=3)  # odd latent sizes: upsample to the skip's size
    np.testing.assert_allclose(_ours(motion_unet, x, ctx), _diffusers(animatediff_ref[2].unet, x, ctx), **TOL)


def test_frames_interact_only_through_the_motion_modules(animatediff_ref, motion_unet, rng):
    """Changing frame 0 changes the motion UNet's frame 3; the SD UNet alone treats frames independently and
    matches the motion UNet's spatial path nowhere (the motion modules are active)."""
    base, _, _ = animatediff_ref
    x, ctx = _inputs(rng)
    y = x.copy()
    y[:, :, 0] += 1.0
    a, b = _ours(motion_unet, x, ctx), _ours(motion_unet, y, ctx)
    assert np.abs(a[:, :, 3] - b[:, :, 3]).max() > 1e-3
    sd, _ = build_and_load(UNet2DConditionModel, base, "unet")
    frame = x[:, :, 3]
    spatial = sd(ms.Tensor(frame), ms.Tensor(TIMESTEPS), ms.Tensor(ctx)).asnumpy()
    assert np.abs(spatial - a[:, :, 3]).max() > 1e-2


def test_v1_adapter_without_a_mid_block_matches_diffusers(animatediff_ref, rng, tmp_path):
    from diffusers import UNetMotionModel

    from tests.reference.animatediff import build_adapter
    base, _, pipe = animatediff_ref
    adapter = build_adapter(tmp_path / "adapter_v1", seed=5, use_motion_mid_block=False,
                            motion_transformer_layers_per_block=1)
    with torch.no_grad():
        reference = UNetMotionModel.from_unet2d(_sd_unet(base), adapter).eval()
    net, config = load_motion_unet(base / "unet", tmp_path / "adapter_v1")
    assert config["use_motion_mid_block"] is False
    x, ctx = _inputs(rng, frames=3)
    np.testing.assert_allclose(_ours(net, x, ctx), _diffusers(reference, x, ctx), **TOL)


def _sd_unet(base):
    from diffusers import UNet2DConditionModel as Reference
    return Reference.from_pretrained(str(base / "unet")).eval()


def test_adapter_checkpoint_loads_alone_with_its_own_names(animatediff_ref):
    _, adapter, _ = animatediff_ref
    net, config = build_and_load(MotionAdapter, adapter)  # every key found, none left over
    names = [n for n, _ in net.parameters_and_names()]
    assert "down_blocks.1.motion_modules.0.transformer_blocks.1.pos_embed.pe" in names
    assert "mid_block.motion_modules.0.proj_out.weight" in names
    assert "up_blocks.0.motion_modules.2.norm.weight" in names  # one more module per up block
    assert config["motion_max_seq_length"] == 16


def test_motion_unet_config_follows_diffusers_from_unet2d(animatediff_ref):
    base, adapter, pipe = animatediff_ref
    config = motion_unet_config(read_config(base, "unet"), read_config(adapter))
    reference = pipe.unet.config
    for key in ("down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
                "num_attention_heads", "motion_num_attention_heads", "motion_max_seq_length",
                "temporal_transformer_layers_per_block", "use_motion_mid_block", "cross_attention_dim"):
        assert _plain(config[key]) == _plain(reference[key]), key


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("adapter,message", [
    (dict(block_out_channels=(8, 16, 16)), r"the UNet has 2 down blocks \(block_out_channels \(8, 16\)\) but the "
                                            r"adapter has 3 \(block_out_channels \(8, 16, 16\)\)"),
    (dict(block_out_channels=(8, 32)), r"block_out_channels differ: UNet \(8, 16\), adapter \(8, 32\)"),
    (dict(motion_layers_per_block=1), r"layers per block differ: UNet layers_per_block \[2, 2\], adapter "
                                      r"motion_layers_per_block \[1, 1\]"),
    (dict(motion_mid_block_layers_per_block=2), r"2 mid-block motion modules"),
], ids=["block count", "block widths", "layers per block", "mid block"])
def test_adapter_layout_mismatch_names_the_mismatch(animatediff_ref, adapter, message):
    base, _, _ = animatediff_ref
    config = {"block_out_channels": (8, 16), "motion_layers_per_block": 2, **adapter}
    with pytest.raises(AdapterMismatch, match=message):
        motion_unet_config(read_config(base, "unet"), config)


def test_compiled_motion_unet_equals_eager(motion_unet, rng):
    """What the command line runs by default (runtime.jit=true): ``ms.jit`` of the same construct."""
    x, ctx = _inputs(rng, frames=3)
    compiled = ms.jit(motion_unet.construct)
    out = compiled(ms.Tensor(x), ms.Tensor(TIMESTEPS), ms.Tensor(ctx)).asnumpy()
    np.testing.assert_allclose(out, _ours(motion_unet, x, ctx), atol=1e-6, rtol=0)


SD15_UNET = dict(act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
                 cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 in_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=4, sample_size=64,
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
V152_ADAPTER = dict(block_out_channels=[320, 640, 1280, 1280], motion_layers_per_block=2, motion_max_seq_length=32,
                    motion_mid_block_layers_per_block=1, motion_norm_num_groups=32, motion_num_attention_heads=8,
                    use_motion_mid_block=True)


def test_real_sd15_and_v1_5_2_adapter_layout_is_diffusers_and_the_union_of_the_two_checkpoints():
    """At full size, without weights (torch's meta device; MindSpore's uninitialised parameters): the motion
    UNet's parameters are diffusers' UNetMotionModel's, name for name and shape for shape, and exactly the SD
    UNet checkpoint's keys plus the adapter checkpoint's (1.31 B parameters)."""
    from diffusers import MotionAdapter as RefAdapter
    from diffusers import UNet2DConditionModel as RefUNet
    from diffusers import UNetMotionModel as RefMotion
    from mindspore.nn.utils import no_init_parameters

    from toolkit.models.animatediff import UNetMotionModel

    with torch.device("meta"):
        unet, adapter = RefUNet(**SD15_UNET), RefAdapter(**V152_ADAPTER)
        reference = RefMotion.from_unet2d(unet, adapter, load_weights=False)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    checkpoints = {k: tuple(v.shape) for m in (unet, adapter) for k, v in m.state_dict().items()}
    with no_init_parameters():
        net = UNetMotionModel.from_config(motion_unet_config(SD15_UNET, V152_ADAPTER))
    ours = {k: tuple(p.shape) for k, p in net.parameters_and_names()}
    assert ours == expected == checkpoints
    assert round(sum(int(np.prod(s)) for s in ours.values()) / 1e9, 2) == 1.31
