"""AnimateDiff's motion UNet: a Stable Diffusion UNet2DConditionModel with a motion module after each of its
resnet / attention layers (diffusers' ``UNetMotionModel``, built by ``UNetMotionModel.from_unet2d(unet,
motion_adapter)``).

The spatial layers are the shared UNet blocks of ``toolkit/models/unet_blocks.py`` (each ``*Motion`` block below
is its 2-D block plus a ``motion_modules`` list); the motion modules are ``motion.AnimateDiffTransformer3D``.
Parameter names are diffusers' ``UNetMotionModel``'s, which are exactly the union of the SD UNet checkpoint's
keys (``down_blocks.0.resnets.0...``) and the motion adapter checkpoint's keys
(``down_blocks.0.motion_modules.0...``, ``mid_block.motion_modules...``, ``up_blocks...``): ``load_motion_unet``
reads the two checkpoints separately and loads both into one network, with the exact key / shape check of
``toolkit.loading`` over their union.

Layout: ``construct(sample (B, C, F, H, W), timestep (B,) or (1,), encoder_hidden_states (B, S, D)) ->
(B, C', F, H, W)`` — diffusers' latent layout. Inside, frames are folded into the batch axis (B * F, C, H, W)
for the spatial layers (the time embedding and the text states are repeated per frame, as diffusers'
UNetMotionModel and AnimateDiffPipeline do) and unfolded by each motion module.
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

from mindspore import nn, ops

from toolkit.models.animatediff.motion import motion_modules
from toolkit.models.base import ModelMixin
from toolkit.models.layers import Conv2d, GroupNorm, TimestepEmbedding, swap_middle_axes
from toolkit.models.unet_blocks import (CrossAttnDownBlock2D, CrossAttnUpBlock2D, DownBlock2D, Timesteps, per_block, repeat_per_frame,
                                        UNetMidBlock2DCrossAttn, UpBlock2D, activation)

log = logging.getLogger(__name__)

# the motion block for each SD block type (from_unet2d: any "CrossAttn" type -> the CrossAttn motion block)
DOWN_MOTION = {"CrossAttnDownBlock2D": "CrossAttnDownBlockMotion", "DownBlock2D": "DownBlockMotion"}
UP_MOTION = {"CrossAttnUpBlock2D": "CrossAttnUpBlockMotion", "UpBlock2D": "UpBlockMotion"}

# UNet2DConditionModel config keys UNetMotionModel has no counterpart for: from_unet2d drops them, so the motion
# UNet always has these values. A UNet with another value would be animated as a different network: refused.
FIXED_UNET_KEYS = {
    "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0, "only_cross_attention": False,
    "resnet_time_scale_shift": "default", "conv_in_kernel": 3, "conv_out_kernel": 3,
    "time_embedding_type": "positional", "time_embedding_dim": None, "time_embedding_act_fn": None,
    "timestep_post_act": None, "class_embed_type": None, "num_class_embeds": None, "dual_cross_attention": False,
    "attention_type": "default", "class_embeddings_concat": False, "mid_block_type": "UNetMidBlock2DCrossAttn",
    "encoder_hid_dim_type": None, "addition_embed_type": None, "time_cond_proj_dim": None,
    "num_attention_heads": None,
}
ADAPTER_DEFAULTS = dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                        motion_transformer_layers_per_block=1, motion_mid_block_layers_per_block=1,
                        motion_transformer_layers_per_mid_block=1, motion_num_attention_heads=8,
                        motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True,
                        conv_in_channels=None)
UNET_DEFAULTS = dict(down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                     block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, norm_num_groups=32)



def _per_block(name: str, value, n: int) -> list:
    return per_block("UNetMotionModel", name, value, n)


class AdapterMismatch(ValueError):
    """A motion adapter cannot be combined with a UNet; the message names each mismatch."""


def adapter_layout_mismatches(unet_config: dict, adapter_config: dict) -> list[str]:
    """What keeps ``adapter_config`` (a MotionAdapter's config.json) from fitting ``unet_config`` (an SD UNet's):
    one readable line per mismatch, empty when they fit. diffusers' from_unet2d checks the block count and the
    layers per block; the block widths, the mid block and PIA's input conv are checked here too (diffusers would
    fail later, on a weight shape)."""
    u = {**UNET_DEFAULTS, **unet_config}
    a = {**ADAPTER_DEFAULTS, **adapter_config}
    out = []
    n_unet, n_adapter = len(u["down_block_types"]), len(a["block_out_channels"])
    if n_unet != n_adapter:
        out.append(f"the UNet has {n_unet} down blocks (block_out_channels {tuple(u['block_out_channels'])}) but "
                   f"the adapter has {n_adapter} (block_out_channels {tuple(a['block_out_channels'])})")
        return out
    if tuple(u["block_out_channels"]) != tuple(a["block_out_channels"]):
        out.append(f"block_out_channels differ: UNet {tuple(u['block_out_channels'])}, adapter "
                   f"{tuple(a['block_out_channels'])}")
    lu, la = u["layers_per_block"], a["motion_layers_per_block"]
    lu = [lu] * n_unet if isinstance(lu, int) else list(lu)
    la = [la] * n_adapter if isinstance(la, int) else list(la)
    if lu != la:
        out.append(f"layers per block differ: UNet layers_per_block {lu}, adapter motion_layers_per_block {la} "
                   "(one motion module follows each resnet)")
    if a["use_motion_mid_block"] and a["motion_mid_block_layers_per_block"] != 1:
        out.append(f"the adapter has {a['motion_mid_block_layers_per_block']} mid-block motion modules "
                   "(motion_mid_block_layers_per_block); the UNet's mid block takes 1")
    if a["conv_in_channels"]:
        out.append(f"the adapter replaces the UNet's input conv (conv_in_channels={a['conv_in_channels']}, a PIA "
                   "adapter), which is not supported")
    return out


def motion_unet_config(unet_config: dict, adapter_config: dict) -> dict:
    """The UNetMotionModel config diffusers' ``from_unet2d(unet, adapter)`` builds: the UNet's config with motion
    block types, its layers per block and motion settings from the adapter. Raises ``AdapterMismatch`` naming
    every mismatch, and ValueError for UNet settings the motion UNet does not have."""
    problems = adapter_layout_mismatches(unet_config, adapter_config)
    if problems:
        raise AdapterMismatch("motion adapter does not fit the UNet: " + "; ".join(problems))
    for key, value in FIXED_UNET_KEYS.items():
        if unet_config.get(key, value) != value:
            raise ValueError(f"UNet config {key}={unet_config[key]!r}: the motion UNet (diffusers' UNetMotionModel) "
                             f"has {key}={value!r}; this UNet cannot be animated")
    bad = [t for t in unet_config.get("down_block_types", ()) if t not in DOWN_MOTION] + \
          [t for t in unet_config.get("up_block_types", ()) if t not in UP_MOTION]
    if bad:
        raise ValueError(f"UNet block types {bad} have no motion counterpart (supported: "
                         f"{sorted(DOWN_MOTION) + sorted(UP_MOTION)})")
    u = {**UNET_DEFAULTS, **unet_config}
    a = {**ADAPTER_DEFAULTS, **adapter_config}
    accepted = inspect.signature(UNetMotionModel.__init__).parameters
    config = {k: v for k, v in unet_config.items() if k in accepted}
    config.update(
        down_block_types=[DOWN_MOTION[t] for t in u["down_block_types"]],
        up_block_types=[UP_MOTION[t] for t in u["up_block_types"]],
        num_attention_heads=unet_config.get("attention_head_dim", 8),  # diffusers' naming quirk: heads
        motion_num_attention_heads=a["motion_num_attention_heads"],
        motion_max_seq_length=a["motion_max_seq_length"],
        use_motion_mid_block=a["use_motion_mid_block"],
        layers_per_block=a["motion_layers_per_block"],
        temporal_transformer_layers_per_mid_block=a["motion_transformer_layers_per_mid_block"],
        temporal_transformer_layers_per_block=a["motion_transformer_layers_per_block"])
    config.pop("attention_head_dim", None)
    return config


# ----------------------------------------------------------------------------- blocks


def _split_temporal(kw: dict) -> tuple[dict, dict]:
    """A motion block's keyword arguments -> (its 2-D block's, the motion modules' settings)."""
    temporal = dict(heads=kw.pop("temporal_num_attention_heads", 8),
                    max_seq_length=kw.pop("temporal_max_seq_length", 32),
                    layers=kw.pop("temporal_transformer_layers_per_block", 1))
    return kw, temporal


def _motion_modules_for(kw: dict, temporal: dict, channels_key: str, where: str) -> nn.CellList:
    """The ``motion_modules`` of a block built with ``kw``: one per resnet, normalised with the UNet's groups
    (diffusers' motion blocks pass ``resnet_groups``, not the adapter's ``motion_norm_num_groups``)."""
    return motion_modules(kw[channels_key], kw.get("num_layers", 1), temporal["heads"], temporal["layers"],
                          kw.get("resnet_groups", 32), temporal["max_seq_length"], where=where)


class DownBlockMotion(DownBlock2D):
    """DownBlock2D with a motion module after each resnet."""

    def __init__(self, **kw):
        kw, temporal = _split_temporal(kw)
        super().__init__(**kw)
        self.motion_modules = _motion_modules_for(kw, temporal, "out_channels", "DownBlockMotion")

    def construct(self, hidden_states, temb, num_frames: int):
        output_states = ()
        for resnet, motion in zip(self.resnets, self.motion_modules):
            hidden_states = motion(resnet(hidden_states, temb), num_frames)
            output_states += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class CrossAttnDownBlockMotion(CrossAttnDownBlock2D):
    """CrossAttnDownBlock2D with a motion module after each (resnet, transformer) pair."""

    def __init__(self, **kw):
        kw, temporal = _split_temporal(kw)
        super().__init__(**kw)
        self.motion_modules = _motion_modules_for(kw, temporal, "out_channels", "CrossAttnDownBlockMotion")

    def construct(self, hidden_states, temb, encoder_hidden_states, num_frames: int):
        output_states = ()
        for resnet, attn, motion in zip(self.resnets, self.attentions, self.motion_modules):
            hidden_states = attn(resnet(hidden_states, temb), encoder_hidden_states)
            hidden_states = motion(hidden_states, num_frames)
            output_states += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class UNetMidBlockCrossAttnMotion(UNetMidBlock2DCrossAttn):
    """ResnetBlock2D, then ``num_layers`` (transformer -> motion module -> resnet)."""

    def __init__(self, **kw):
        kw, temporal = _split_temporal(kw)
        super().__init__(**kw)
        self.motion_modules = _motion_modules_for(kw, temporal, "in_channels", "UNetMidBlockCrossAttnMotion")

    def construct(self, hidden_states, temb, encoder_hidden_states, num_frames: int):
        hidden_states = self.resnets[0](hidden_states, temb)
        for attn, resnet, motion in zip(self.attentions, self.resnets[1:], self.motion_modules):
            hidden_states = motion(attn(hidden_states, encoder_hidden_states), num_frames)
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


class UpBlockMotion(UpBlock2D):
    """UpBlock2D with a motion module after each resnet."""

    def __init__(self, **kw):
        kw, temporal = _split_temporal(kw)
        super().__init__(**kw)
        self.motion_modules = _motion_modules_for(kw, temporal, "out_channels", "UpBlockMotion")

    def construct(self, hidden_states, res_hidden_states_tuple, temb, upsample_size, num_frames: int):
        n = len(res_hidden_states_tuple)
        for i, (resnet, motion) in enumerate(zip(self.resnets, self.motion_modules)):
            hidden_states = ops.cat([hidden_states, res_hidden_states_tuple[n - 1 - i]], 1)
            hidden_states = motion(resnet(hidden_states, temb), num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states


class CrossAttnUpBlockMotion(CrossAttnUpBlock2D):
    """CrossAttnUpBlock2D with a motion module after each (resnet, transformer) pair."""

    def __init__(self, **kw):
        kw, temporal = _split_temporal(kw)
        super().__init__(**kw)
        self.motion_modules = _motion_modules_for(kw, temporal, "out_channels", "CrossAttnUpBlockMotion")

    def construct(self, hidden_states, res_hidden_states_tuple, temb, encoder_hidden_states, upsample_size,
                  num_frames: int):
        n = len(res_hidden_states_tuple)
        for i, (resnet, attn, motion) in enumerate(zip(self.resnets, self.attentions, self.motion_modules)):
            hidden_states = ops.cat([hidden_states, res_hidden_states_tuple[n - 1 - i]], 1)
            hidden_states = attn(resnet(hidden_states, temb), encoder_hidden_states)
            hidden_states = motion(hidden_states, num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states


# ----------------------------------------------------------------------------- the UNet




class UNetMotionModel(ModelMixin):
    """conv_in -> down blocks -> mid block -> up blocks -> conv_norm_out -> SiLU -> conv_out on the frames
    folded into the batch; motion modules inside the blocks mix information across frames.

    Constructor arguments are diffusers' UNetMotionModel config keys (so a saved motion UNet's config.json
    builds it too); ``motion_unet_config`` makes them from an SD UNet config and a MotionAdapter config.
    ``num_attention_heads`` is the spatial head count per block; ``motion_num_attention_heads`` the temporal one.
    Without ``use_motion_mid_block`` (v1 adapters) the mid block is the plain 2-D one.
    """

    ignored_config_keys = ("sample_size", "reverse_motion_num_attention_heads", "addition_time_embed_dim",
                           "projection_class_embeddings_input_dim", "encoder_hid_dim")

    def __init__(self, in_channels: int = 4, out_channels: int = 4,
                 down_block_types: tuple = ("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",),
                 up_block_types: tuple = ("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * 3,
                 block_out_channels: tuple = (320, 640, 1280, 1280), layers_per_block=2, downsample_padding: int = 1,
                 mid_block_scale_factor: float = 1, act_fn: str = "silu", norm_num_groups: int = 32,
                 norm_eps: float = 1e-5, cross_attention_dim=1280, transformer_layers_per_block=1,
                 reverse_transformer_layers_per_block=None, temporal_transformer_layers_per_block=1,
                 reverse_temporal_transformer_layers_per_block=None, transformer_layers_per_mid_block=None,
                 temporal_transformer_layers_per_mid_block=1, use_linear_projection: bool = False,
                 num_attention_heads=8, motion_max_seq_length: int = 32, motion_num_attention_heads=8,
                 use_motion_mid_block: bool = True, mid_block_layers: int = 1,
                 encoder_hid_dim_type=None, addition_embed_type=None, time_cond_proj_dim=None):
        super().__init__()
        for key, value in (("encoder_hid_dim_type", encoder_hid_dim_type), ("addition_embed_type", addition_embed_type),
                           ("time_cond_proj_dim", time_cond_proj_dim)):
            if value is not None:
                raise ValueError(f"UNetMotionModel: {key}={value!r} is not supported (supported: None)")
        n = len(down_block_types)
        if len(up_block_types) != n or len(block_out_channels) != n:
            raise ValueError(f"UNetMotionModel: down_block_types ({n}), up_block_types ({len(up_block_types)}) and "
                             f"block_out_channels ({len(block_out_channels)}) must have the same length")
        down_kinds, up_kinds = set(DOWN_MOTION.values()), set(UP_MOTION.values())
        bad = [t for t in down_block_types if t not in down_kinds] + [t for t in up_block_types if t not in up_kinds]
        if bad:
            raise ValueError(f"UNetMotionModel: block types {bad} not supported "
                             f"(supported: {sorted(down_kinds | up_kinds)})")
        heads = _per_block("num_attention_heads", num_attention_heads, n)
        cross = _per_block("cross_attention_dim", cross_attention_dim, n)
        layers = _per_block("layers_per_block", layers_per_block, n)
        t_layers = _per_block("transformer_layers_per_block", transformer_layers_per_block, n)
        tt_layers = _per_block("temporal_transformer_layers_per_block", temporal_transformer_layers_per_block, n) \
            if isinstance(temporal_transformer_layers_per_block, int) else list(temporal_transformer_layers_per_block)
        motion_heads = _per_block("motion_num_attention_heads", motion_num_attention_heads, n)
        rev_t_layers = (list(reversed(t_layers)) if reverse_transformer_layers_per_block is None
                        else _per_block("reverse_transformer_layers_per_block",
                                        reverse_transformer_layers_per_block, n))
        rev_tt_layers = (list(reversed(tt_layers)) if reverse_temporal_transformer_layers_per_block is None
                         else _per_block("reverse_temporal_transformer_layers_per_block",
                                         reverse_temporal_transformer_layers_per_block, n))

        self.conv_in = Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        time_embed_dim = block_out_channels[0] * 4
        self.time_proj = Timesteps(block_out_channels[0], True, 0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim, act_fn=act_fn)

        common = dict(temb_channels=time_embed_dim, resnet_eps=norm_eps, resnet_act_fn=act_fn,
                      resnet_groups=norm_num_groups, temporal_max_seq_length=motion_max_seq_length)
        down, out_ch = [], block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            kw = dict(common, in_channels=in_ch, out_channels=out_ch, num_layers=layers[i],
                      add_downsample=i < n - 1, downsample_padding=downsample_padding,
                      temporal_num_attention_heads=motion_heads[i],
                      temporal_transformer_layers_per_block=tt_layers[i])
            if kind == "CrossAttnDownBlockMotion":
                down.append(CrossAttnDownBlockMotion(**kw, transformer_layers_per_block=t_layers[i],
                                                     num_attention_heads=heads[i], cross_attention_dim=cross[i],
                                                     use_linear_projection=use_linear_projection))
            else:
                down.append(DownBlockMotion(**kw))
        self.down_blocks = nn.CellList(down)

        if transformer_layers_per_mid_block is None:
            transformer_layers_per_mid_block = t_layers[-1] if isinstance(t_layers[-1], int) else 1
        mid = dict(in_channels=block_out_channels[-1], temb_channels=time_embed_dim, resnet_eps=norm_eps,
                   resnet_act_fn=act_fn, output_scale_factor=mid_block_scale_factor,
                   cross_attention_dim=cross[-1], num_attention_heads=heads[-1], resnet_groups=norm_num_groups,
                   use_linear_projection=use_linear_projection, num_layers=mid_block_layers,
                   transformer_layers_per_block=transformer_layers_per_mid_block)
        self.mid_has_motion = bool(use_motion_mid_block)
        if use_motion_mid_block:
            self.mid_block = UNetMidBlockCrossAttnMotion(
                **mid, temporal_num_attention_heads=motion_heads[-1], temporal_max_seq_length=motion_max_seq_length,
                temporal_transformer_layers_per_block=temporal_transformer_layers_per_mid_block)
        else:
            self.mid_block = UNetMidBlock2DCrossAttn(**mid)

        rev_channels = list(reversed(block_out_channels))
        rev_heads, rev_layers, rev_cross, rev_motion_heads = heads[::-1], layers[::-1], cross[::-1], motion_heads[::-1]
        up, out_ch = [], rev_channels[0]
        self.num_upsamplers = n - 1
        for i, kind in enumerate(up_block_types):
            prev, out_ch = out_ch, rev_channels[i]
            kw = dict(common, in_channels=rev_channels[min(i + 1, n - 1)], out_channels=out_ch,
                      prev_output_channel=prev, num_layers=rev_layers[i] + 1, add_upsample=i < n - 1,
                      resolution_idx=i, temporal_num_attention_heads=rev_motion_heads[i],
                      temporal_transformer_layers_per_block=rev_tt_layers[i])
            if kind == "CrossAttnUpBlockMotion":
                up.append(CrossAttnUpBlockMotion(**kw, transformer_layers_per_block=rev_t_layers[i],
                                                 num_attention_heads=rev_heads[i], cross_attention_dim=rev_cross[i],
                                                 use_linear_projection=use_linear_projection))
            else:
                up.append(UpBlockMotion(**kw))
        self.up_blocks = nn.CellList(up)
        self._cross_down = tuple(k == "CrossAttnDownBlockMotion" for k in down_block_types)
        self._cross_up = tuple(k == "CrossAttnUpBlockMotion" for k in up_block_types)

        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = activation(act_fn)
        self.conv_out = Conv2d(block_out_channels[0], out_channels, 3, padding=1)
        self.motion_max_seq_length = motion_max_seq_length

    def construct(self, sample, timestep, encoder_hidden_states):
        b, c, f, h, w = sample.shape
        factor = 2 ** self.num_upsamplers
        forward_upsample_size = h % factor != 0 or w % factor != 0

        t = ops.broadcast_to(timestep.reshape(-1), (b,))
        emb = self.time_embedding(self.time_proj(t))
        emb = repeat_per_frame(emb, f)
        context = repeat_per_frame(encoder_hidden_states, f)

        x = self.conv_in(swap_middle_axes(sample, b, c, f).reshape(b * f, c, h, w))
        skips = (x,)
        for i, block in enumerate(self.down_blocks):
            if self._cross_down[i]:
                x, res = block(x, emb, context, f)
            else:
                x, res = block(x, emb, f)
            skips += res

        if self.mid_has_motion:
            x = self.mid_block(x, emb, context, f)
        else:
            x = self.mid_block(x, emb, context)

        for i, block in enumerate(self.up_blocks):
            k = len(block.resnets)
            res, skips = skips[len(skips) - k:], skips[: len(skips) - k]
            upsample_size = None
            if forward_upsample_size and i < len(self.up_blocks) - 1:
                upsample_size = skips[-1].shape[2:]
            if self._cross_up[i]:
                x = block(x, res, emb, context, upsample_size, f)
            else:
                x = block(x, res, emb, upsample_size, f)

        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return swap_middle_axes(x, b, f, x.shape[1]).reshape(b, x.shape[1], f, h, w)


def load_motion_unet(unet_folder: Path, adapter_folder: Path, variant: str | None = None, dtype=None):
    """Build the motion UNet from an SD UNet folder and a MotionAdapter folder (each with config.json and
    safetensors weights) and load both checkpoints into it. ``variant`` selects the UNet's weight files; the
    adapter's are the same variant when it has them, its plain files otherwise. Returns (net, config)."""
    import mindspore as ms
    from mindspore.nn.utils import no_init_parameters

    from toolkit import loading

    unet_folder, adapter_folder = Path(unet_folder), Path(adapter_folder)
    unet_config, adapter_config = loading.read_config(unet_folder), loading.read_config(adapter_folder)
    config = motion_unet_config(unet_config, adapter_config)
    groups = (unet_config.get("norm_num_groups", 32), adapter_config.get("motion_norm_num_groups", 32))
    if groups[0] != groups[1]:
        log.warning("motion modules normalise with the UNet's norm_num_groups=%s, not the adapter's "
                    "motion_norm_num_groups=%s (as diffusers' UNetMotionModel does)", *groups)
    with no_init_parameters():
        net = UNetMotionModel.from_config(config)
    unet_files = loading.weight_files(unet_folder, variant)
    try:
        adapter_files = loading.weight_files(adapter_folder, variant)
    except loading.CheckpointError:
        if variant is None:
            raise
        log.info("motion adapter %s has no %s weights; using its default weights", adapter_folder, variant)
        adapter_files = loading.weight_files(adapter_folder, None)
    loading.load_weights(net, unet_files + adapter_files, dtype=dtype or ms.float32,
                         where=f"{unet_folder} + motion adapter {adapter_folder}")
    net.set_train(False)
    return net, config
