"""Stable Diffusion's UNet2DConditionModel (SD 1.x / 2.x text-to-image UNet) in MindSpore.

Port of diffusers' ``models/unets/unet_2d_condition.py`` for the configurations SD checkpoints use:
CrossAttnDownBlock2D / DownBlock2D down blocks, UNetMidBlock2DCrossAttn (or UNetMidBlock2D / no
mid block), UpBlock2D / CrossAttnUpBlock2D up blocks, sinusoidal ("positional") timestep embedding.
The blocks live in ``toolkit/models/unet_blocks.py``. Parameter names and config keys are diffusers'.

diffusers' naming quirk is kept: ``attention_head_dim`` in the config is the number of attention
heads per block (each head is channels // heads wide), and ``num_attention_heads`` must be unset
(diffusers refuses it too). Config keys that add conditioning branches (class / addition / text
projection embeddings, LCM's time_cond_proj_dim, GLIGEN, ...) are refused with the key named; keys
that do not change the inference network are ignored.

``construct(sample (B, C, H, W), timestep (B,) float32, encoder_hidden_states (B, S, D)) -> (B, C', H, W)``.
Sizes that are not multiples of 2**num_upsamplers are handled as in diffusers (each upsampler
resizes to its skip tensor's size).
"""
from __future__ import annotations

from mindspore import nn, ops

from toolkit.models.base import ModelMixin
from toolkit.models.layers import Conv2d, GroupNorm, TimestepEmbedding
from toolkit.models.unet_blocks import (CrossAttnDownBlock2D, CrossAttnUpBlock2D, DownBlock2D, Timesteps, per_block,
                                        UNetMidBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, activation)

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D", None)

# config key -> the only value(s) this port implements (anything else changes the network)
ARCHITECTURE_DEFAULTS = {
    "num_attention_heads": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "addition_embed_type": (None,),
    "time_embedding_type": ("positional",),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "dual_cross_attention": (False,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
}





def _per_block(name: str, value, n: int) -> list:
    return per_block("UNet2DConditionModel", name, value, n)


class UNet2DConditionModel(ModelMixin):
    """Text-conditioned UNet: conv_in -> down blocks (skip tensors kept) -> mid block -> up blocks
    (consuming the skips) -> conv_norm_out -> SiLU -> conv_out; the timestep embedding ``emb`` goes to
    every resnet, the text states to every transformer."""

    # keys that only matter for training, fp16, the pipeline, or block / embedding types this port
    # refuses anyway (diffusers passes resnet_skip_time_act / resnet_out_scale_factor / cross_attention_norm
    # only to the ResnetDownsample / SimpleCrossAttn blocks)
    ignored_config_keys = ("sample_size", "dropout", "upcast_attention", "cross_attention_norm",
                           "mid_block_only_cross_attention", "addition_time_embed_dim",
                           "addition_embed_type_num_heads", "projection_class_embeddings_input_dim",
                           "resnet_skip_time_act", "resnet_out_scale_factor")

    def __init__(self, in_channels: int = 4, out_channels: int = 4, center_input_sample: bool = False,
                 flip_sin_to_cos: bool = True, freq_shift: int = 0,
                 down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                            "DownBlock2D"),
                 mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
                 up_block_types: tuple = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                          "CrossAttnUpBlock2D"),
                 only_cross_attention: bool | tuple = False, block_out_channels: tuple = (320, 640, 1280, 1280),
                 layers_per_block: int | tuple = 2, downsample_padding: int = 1, mid_block_scale_factor: float = 1,
                 act_fn: str = "silu", norm_num_groups: int | None = 32, norm_eps: float = 1e-5,
                 cross_attention_dim: int | tuple = 1280, transformer_layers_per_block: int | tuple = 1,
                 reverse_transformer_layers_per_block: tuple | None = None, attention_head_dim: int | tuple = 8,
                 use_linear_projection: bool = False, resnet_time_scale_shift: str = "default",
                 time_embedding_dim: int | None = None, time_embedding_act_fn: str | None = None,
                 conv_in_kernel: int = 3, conv_out_kernel: int = 3,
                 # refused unless at their defaults (see ARCHITECTURE_DEFAULTS)
                 num_attention_heads=None, encoder_hid_dim=None, encoder_hid_dim_type=None, class_embed_type=None,
                 num_class_embeds=None, addition_embed_type=None, time_embedding_type="positional",
                 timestep_post_act=None, time_cond_proj_dim=None, dual_cross_attention=False,
                 attention_type="default", class_embeddings_concat=False):
        super().__init__()
        given = locals()
        for key in ARCHITECTURE_DEFAULTS:
            value = given[key]
            if value not in ARCHITECTURE_DEFAULTS[key]:
                raise ValueError(f"UNet2DConditionModel: config {key}={value!r} is not supported (it changes the "
                                 f"network; supported: {list(ARCHITECTURE_DEFAULTS[key])})")
        n = len(down_block_types)
        if len(up_block_types) != n or len(block_out_channels) != n:
            raise ValueError(f"UNet2DConditionModel: down_block_types ({n}), up_block_types ({len(up_block_types)}) "
                             f"and block_out_channels ({len(block_out_channels)}) must have the same length")
        for name, types, allowed in (("down_block_types", down_block_types, DOWN_BLOCK_TYPES),
                                     ("up_block_types", up_block_types, UP_BLOCK_TYPES)):
            bad = [t for t in types if t not in allowed]
            if bad:
                raise ValueError(f"UNet2DConditionModel: {name} {bad} not supported (supported: {list(allowed)})")
        if mid_block_type not in MID_BLOCK_TYPES:
            raise ValueError(f"UNet2DConditionModel: mid_block_type={mid_block_type!r} not supported "
                             f"(supported: {list(MID_BLOCK_TYPES)})")

        self.center_input_sample = center_input_sample
        heads = _per_block("attention_head_dim", attention_head_dim, n)  # diffusers' quirk: number of heads
        if any(not isinstance(h, int) or h <= 0 for h in heads):
            raise ValueError(f"UNet2DConditionModel: attention_head_dim={attention_head_dim!r} must be a positive "
                             "number of heads per block")
        only_cross = _per_block("only_cross_attention", only_cross_attention, n)
        cross_dims = _per_block("cross_attention_dim", cross_attention_dim, n)
        layers = _per_block("layers_per_block", layers_per_block, n)
        t_layers = _per_block("transformer_layers_per_block", transformer_layers_per_block, n)
        if reverse_transformer_layers_per_block is None:
            if any(not isinstance(t, int) for t in t_layers):
                raise ValueError("UNet2DConditionModel: per-layer transformer_layers_per_block needs "
                                 "reverse_transformer_layers_per_block")
            reverse_t_layers = list(reversed(t_layers))
        else:
            reverse_t_layers = list(reverse_transformer_layers_per_block)

        self.conv_in = Conv2d(in_channels, block_out_channels[0], conv_in_kernel, padding=(conv_in_kernel - 1) // 2)
        time_embed_dim = time_embedding_dim or block_out_channels[0] * 4
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim, act_fn=act_fn)
        self.time_embed_act = activation(time_embedding_act_fn) if time_embedding_act_fn else None

        common = dict(temb_channels=time_embed_dim, resnet_eps=norm_eps, resnet_act_fn=act_fn,
                      resnet_groups=norm_num_groups, resnet_time_scale_shift=resnet_time_scale_shift)

        down, out_ch = [], block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            kw = dict(common, num_layers=layers[i], in_channels=in_ch, out_channels=out_ch,
                      add_downsample=i < n - 1, downsample_padding=downsample_padding)
            if kind == "CrossAttnDownBlock2D":
                down.append(CrossAttnDownBlock2D(**kw, transformer_layers_per_block=t_layers[i],
                                                 num_attention_heads=heads[i], cross_attention_dim=cross_dims[i],
                                                 use_linear_projection=use_linear_projection,
                                                 only_cross_attention=only_cross[i]))
            else:
                down.append(DownBlock2D(**kw))
        self.down_blocks = nn.CellList(down)

        if mid_block_type == "UNetMidBlock2DCrossAttn":
            self.mid_block = UNetMidBlock2DCrossAttn(
                in_channels=block_out_channels[-1], temb_channels=time_embed_dim, resnet_eps=norm_eps,
                resnet_act_fn=act_fn, resnet_groups=norm_num_groups, output_scale_factor=mid_block_scale_factor,
                resnet_time_scale_shift=resnet_time_scale_shift, transformer_layers_per_block=t_layers[-1],
                num_attention_heads=heads[-1], cross_attention_dim=cross_dims[-1],
                use_linear_projection=use_linear_projection)
        elif mid_block_type == "UNetMidBlock2D":
            self.mid_block = UNetMidBlock2D(
                in_channels=block_out_channels[-1], temb_channels=time_embed_dim, num_layers=0, resnet_eps=norm_eps,
                resnet_act_fn=act_fn, output_scale_factor=mid_block_scale_factor, resnet_groups=norm_num_groups,
                resnet_time_scale_shift=resnet_time_scale_shift, add_attention=False)
        else:
            self.mid_block = None

        rev_channels = list(reversed(block_out_channels))
        rev_heads, rev_layers, rev_cross = heads[::-1], layers[::-1], cross_dims[::-1]
        rev_only_cross = only_cross[::-1]
        up, out_ch = [], rev_channels[0]
        self.num_upsamplers = n - 1
        for i, kind in enumerate(up_block_types):
            prev, out_ch = out_ch, rev_channels[i]
            in_ch = rev_channels[min(i + 1, n - 1)]
            kw = dict(common, num_layers=rev_layers[i] + 1, in_channels=in_ch, out_channels=out_ch,
                      prev_output_channel=prev, add_upsample=i < n - 1, resolution_idx=i)
            if kind == "CrossAttnUpBlock2D":
                up.append(CrossAttnUpBlock2D(**kw, transformer_layers_per_block=reverse_t_layers[i],
                                             num_attention_heads=rev_heads[i], cross_attention_dim=rev_cross[i],
                                             use_linear_projection=use_linear_projection,
                                             only_cross_attention=rev_only_cross[i]))
            else:
                up.append(UpBlock2D(**kw))
        self.up_blocks = nn.CellList(up)
        self._cross_attn_down = tuple(k == "CrossAttnDownBlock2D" for k in down_block_types)
        self._cross_attn_up = tuple(k == "CrossAttnUpBlock2D" for k in up_block_types)
        self._mid_cross_attn = mid_block_type == "UNetMidBlock2DCrossAttn"

        if norm_num_groups is not None:
            self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
            self.conv_act = activation(act_fn)
        else:
            self.conv_norm_out = None
        self.conv_out = Conv2d(block_out_channels[0], out_channels, conv_out_kernel,
                               padding=(conv_out_kernel - 1) // 2)

    def time_embed(self, timestep, batch: int):
        """The embedding every resnet receives: TimestepEmbedding(sinusoid(t)), (B, time_embed_dim)."""
        t = ops.broadcast_to(timestep.reshape(-1), (batch,))
        emb = self.time_embedding(self.time_proj(t))
        if self.time_embed_act is not None:
            emb = self.time_embed_act(emb)
        return emb

    def construct(self, sample, timestep, encoder_hidden_states):
        b, _, h, w = sample.shape
        factor = 2 ** self.num_upsamplers
        forward_upsample_size = h % factor != 0 or w % factor != 0
        if self.center_input_sample:
            sample = 2 * sample - 1.0
        emb = self.time_embed(timestep, b)

        sample = self.conv_in(sample)
        skips = (sample,)
        for i, block in enumerate(self.down_blocks):
            if self._cross_attn_down[i]:
                sample, res = block(sample, emb, encoder_hidden_states)
            else:
                sample, res = block(sample, emb)
            skips += res

        if self.mid_block is not None:
            if self._mid_cross_attn:
                sample = self.mid_block(sample, emb, encoder_hidden_states)
            else:
                sample = self.mid_block(sample, emb)

        for i, block in enumerate(self.up_blocks):
            k = len(block.resnets)
            res, skips = skips[len(skips) - k:], skips[: len(skips) - k]
            upsample_size = None
            if forward_upsample_size and i < len(self.up_blocks) - 1:
                upsample_size = skips[-1].shape[2:]
            if self._cross_attn_up[i]:
                sample = block(sample, res, emb, encoder_hidden_states, upsample_size)
            else:
                sample = block(sample, res, emb, upsample_size)

        if self.conv_norm_out is not None:
            sample = self.conv_act(self.conv_norm_out(sample))
        return self.conv_out(sample)
