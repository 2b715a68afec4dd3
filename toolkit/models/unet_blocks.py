"""UNet and KL-autoencoder building blocks shared by the UNet families (SD 1.5, AnimateDiff,
Stable Video Diffusion, I2VGen-XL).

Ports of diffusers' ``models/resnet.py`` (``ResnetBlock2D``), ``downsampling.py`` / ``upsampling.py``
(``Downsample2D``, ``Upsample2D``), ``embeddings.py`` (``Timesteps``, ``SinusoidalPositionalEmbedding``),
``attention.py`` (``BasicTransformerBlock``), ``attention_processor.py`` (``Attention`` with group
norm and residual, as in the VAE mid block), ``transformers/transformer_2d.py`` (``Transformer2DModel``,
continuous input), ``unets/unet_2d_blocks.py`` (the down / mid / up blocks) and
``autoencoders/vae.py`` (``Encoder``, ``Decoder``). Parameter names and constructor arguments are
diffusers', so checkpoints load by name and a family built on these blocks reads like its diffusers
counterpart. Layout (B, C, H, W), float32.

Every block's ``construct`` takes its inputs explicitly (``hidden_states``, ``temb``,
``encoder_hidden_states``, and for up blocks ``res_hidden_states_tuple``); nothing is cached in the
modules. Down blocks return ``(hidden_states, output_states)``: the skip tensors, in the order the
up blocks consume them from the end. Video families wrap these 2-D blocks with frames folded into
the batch axis.

Options that only matter for training (dropout, gradient checkpointing) or for mixed precision
(``upcast_attention``, ``upcast_softmax``: everything here is float32) are accepted and ignored;
options that change the architecture and are not implemented raise a ValueError naming them.
"""
from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from toolkit.models.base import ModelMixin
from toolkit.models.layers import (Attention, Conv2d, FeedForward, GroupNorm, LayerNorm, TimestepEmbedding,
                                   add_channel_bias, channels_first, channels_last_rows, linear, resize_nearest,
                                   scaled_dot_product_attention, silu, sinusoidal_timestep_embedding)

__all__ = [
    "ResnetBlock2D", "Downsample2D", "Upsample2D", "Timesteps", "TimestepEmbedding", "SinusoidalPositionalEmbedding",
    "GroupNormAttention", "BasicTransformerBlock", "Transformer2DModel",
    "DownBlock2D", "CrossAttnDownBlock2D", "UNetMidBlock2DCrossAttn", "UNetMidBlock2D", "UpBlock2D",
    "CrossAttnUpBlock2D", "DownEncoderBlock2D", "UpDecoderBlock2D", "Encoder", "Decoder", "activation",
]

ACTIVATIONS = {"silu": silu, "swish": silu}


def activation(name: str):
    """diffusers ``get_activation`` for the names these networks use."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _unsupported(where: str, **options):
    """Raise for an architecture option set to a value this port does not implement.

    ``options`` maps a name to ``(value, allowed values)``."""
    for name, (value, allowed) in options.items():
        if value not in allowed:
            raise ValueError(f"{where}: {name}={value!r} is not supported (supported: {list(allowed)})")


# ----------------------------------------------------------------------------- resnet, resampling


class ResnetBlock2D(nn.Cell):
    """norm1 -> act -> conv1 (+ projected time embedding) -> norm2 -> act -> conv2, plus the input
    (through a 1x1 ``conv_shortcut`` when the channel count changes), divided by ``output_scale_factor``.

    ``time_embedding_norm``: "default" adds ``time_emb_proj(act(temb))`` before norm2; "scale_shift"
    splits it into (scale, shift) applied after norm2. Without ``temb_channels`` there is no time
    input ("group" is accepted as well: diffusers' VAE decoder passes it). diffusers' ``conv_shortcut``
    flag does not change the shortcut (it is a 1x1 conv either way); it is accepted for that reason.
    """

    def __init__(self, *, in_channels: int, out_channels: int | None = None, conv_shortcut: bool = False,
                 dropout: float = 0.0, temb_channels: int | None = 512, groups: int = 32,
                 groups_out: int | None = None, pre_norm: bool = True, eps: float = 1e-6,
                 non_linearity: str = "swish", skip_time_act: bool = False, time_embedding_norm: str = "default",
                 kernel=None, output_scale_factor: float = 1.0, use_in_shortcut: bool | None = None,
                 up: bool = False, down: bool = False, conv_shortcut_bias: bool = True,
                 conv_2d_out_channels: int | None = None):
        super().__init__()
        _unsupported("ResnetBlock2D", up=(up, (False,)), down=(down, (False,)), kernel=(kernel, (None,)))
        allowed_norms = ("default", "scale_shift") if temb_channels is not None else ("default", "scale_shift", "group")
        _unsupported("ResnetBlock2D", time_embedding_norm=(time_embedding_norm, allowed_norms))
        out_channels = out_channels or in_channels
        conv_2d_out_channels = conv_2d_out_channels or out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.act = activation(non_linearity)
        self.output_scale_factor = output_scale_factor
        self.time_embedding_norm = time_embedding_norm
        self.skip_time_act = skip_time_act

        self.norm1 = GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = None
        if temb_channels is not None:
            width = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
            self.time_emb_proj = linear(temb_channels, width)
        self.norm2 = GroupNorm(groups_out or groups, out_channels, eps=eps)
        self.conv2 = Conv2d(out_channels, conv_2d_out_channels, 3, padding=1)
        if use_in_shortcut is None:
            use_in_shortcut = in_channels != conv_2d_out_channels
        self.conv_shortcut = (Conv2d(in_channels, conv_2d_out_channels, 1, bias=conv_shortcut_bias)
                              if use_in_shortcut else None)

    def construct(self, input_tensor, temb=None):
        h = self.conv1(self.act(self.norm1(input_tensor)))
        if self.time_emb_proj is not None and temb is not None:
            if not self.skip_time_act:
                temb = self.act(temb)
            temb = self.time_emb_proj(temb)
            if self.time_embedding_norm == "scale_shift":
                scale, shift = ops.chunk(temb[:, :, None, None], 2, 1)
                h = self.norm2(h) * (1 + scale) + shift
            else:
                h = self.norm2(add_channel_bias(h, temb))
        else:
            h = self.norm2(h)
        h = self.conv2(self.act(h))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        out = input_tensor + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nn.Cell):
    """2x spatial downsampling: a stride-2 ``conv`` (``padding`` on every side; padding=0 pads one
    row/column at the bottom/right instead, as diffusers does), or 2x2 average pooling without
    ``use_conv``. The conv is named ``conv`` (diffusers' blocks create it with name="op")."""

    def __init__(self, channels: int, use_conv: bool = False, out_channels: int | None = None, padding: int = 1,
                 name: str = "conv", kernel_size: int = 3, norm_type=None, eps=None, elementwise_affine=None,
                 bias: bool = True):
        super().__init__()
        _unsupported("Downsample2D", norm_type=(norm_type, (None,)), name=(name, ("conv", "op")))
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            pad = (0, 1, 0, 1) if padding == 0 else padding  # (top, bottom, left, right)
            self.conv = Conv2d(channels, self.out_channels, kernel_size, stride=2, padding=pad, bias=bias)
        elif self.out_channels != channels:
            raise ValueError(f"Downsample2D: average pooling keeps channels ({channels} != {self.out_channels})")

    def construct(self, hidden_states):
        if self.use_conv:
            return self.conv(hidden_states)
        b, c, h, w = hidden_states.shape
        x = hidden_states[:, :, : h // 2 * 2, : w // 2 * 2]  # avg_pool2d(2, 2) floors odd sizes
        return x.reshape(b, c, h // 2, 2, w // 2, 2).mean((3, 5))


class Upsample2D(nn.Cell):
    """Nearest-neighbour 2x upsampling (or to ``output_size`` when given), then an optional 3x3 ``conv``."""

    def __init__(self, channels: int, use_conv: bool = False, use_conv_transpose: bool = False,
                 out_channels: int | None = None, name: str = "conv", kernel_size: int | None = None,
                 padding: int = 1, norm_type=None, eps=None, elementwise_affine=None, bias: bool = True,
                 interpolate: bool = True):
        super().__init__()
        _unsupported("Upsample2D", use_conv_transpose=(use_conv_transpose, (False,)),
                     norm_type=(norm_type, (None,)), name=(name, ("conv",)), interpolate=(interpolate, (True,)))
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = Conv2d(channels, self.out_channels, kernel_size or 3, padding=padding, bias=bias)

    def construct(self, hidden_states, output_size=None):
        if output_size is None:
            output_size = (hidden_states.shape[2] * 2, hidden_states.shape[3] * 2)
        hidden_states = resize_nearest(hidden_states, tuple(output_size))
        if self.use_conv:
            hidden_states = self.conv(hidden_states)
        return hidden_states


# ----------------------------------------------------------------------------- embeddings


class Timesteps(nn.Cell):
    """diffusers ``Timesteps``: sinusoidal embedding of a (N,) timestep tensor -> (N, num_channels)."""

    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float, scale: float = 1.0):
        super().__init__()
        self.num_channels = num_channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = downscale_freq_shift
        self.scale = scale

    def construct(self, timesteps):
        return sinusoidal_timestep_embedding(timesteps, self.num_channels, self.flip_sin_to_cos,
                                             self.downscale_freq_shift, self.scale)


def sinusoidal_positions(embed_dim: int, max_seq_length: int) -> np.ndarray:
    """diffusers ``SinusoidalPositionalEmbedding.pe``: (1, max_seq_length, embed_dim) float32, sin on even
    channels, cos on odd ones, computed in float32 as torch does."""
    position = np.arange(max_seq_length, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, embed_dim, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / embed_dim))
    pe = np.zeros((1, max_seq_length, embed_dim), np.float32)
    pe[0, :, 0::2] = np.sin(position * div_term)
    pe[0, :, 1::2] = np.cos(position * div_term)
    return pe


class SinusoidalPositionalEmbedding(nn.Cell):
    """Adds ``pe[:, :seq_len]`` to (B, S, D). ``pe`` is a (non-trainable) parameter because diffusers
    stores it in checkpoints (a persistent buffer); it is loaded like any weight."""

    def __init__(self, embed_dim: int, max_seq_length: int = 32):
        super().__init__()
        self.pe = Parameter(Tensor(sinusoidal_positions(embed_dim, max_seq_length)), requires_grad=False)

    def construct(self, x):
        return x + self.pe[:, : x.shape[1]]


# ----------------------------------------------------------------------------- attention


class GroupNormAttention(Attention):
    """diffusers ``Attention`` as used on feature maps (the VAE / UNetMidBlock2D attention): input
    (B, C, H, W), ``group_norm`` over channels, single- or multi-head self-attention over the H*W
    positions, ``to_out.0``, plus the input (``residual_connection``), divided by ``rescale_output_factor``."""

    def __init__(self, query_dim: int, heads: int = 1, dim_head: int = 64, bias: bool = True,
                 norm_num_groups: int | None = 32, eps: float = 1e-5, residual_connection: bool = True,
                 rescale_output_factor: float = 1.0, out_bias: bool = True):
        super().__init__(query_dim, heads=heads, dim_head=dim_head, bias=bias, out_bias=out_bias)
        self.group_norm = GroupNorm(norm_num_groups, query_dim, eps=eps) if norm_num_groups else None
        self.residual_connection = residual_connection
        self.rescale_output_factor = rescale_output_factor

    def construct(self, hidden_states):
        b, c, h, w = hidden_states.shape
        x = hidden_states if self.group_norm is None else self.group_norm(hidden_states)
        x = channels_last_rows(x).reshape(b, h * w, c)
        q, k, v = self.project_qkv(x)
        out = self.project_out(scaled_dot_product_attention(q, k, v))
        out = channels_first(out.reshape(b * h * w, -1), b, (h, w))
        if self.residual_connection:
            out = out + hidden_states
        if self.rescale_output_factor != 1.0:
            out = out / self.rescale_output_factor
        return out


class BasicTransformerBlock(nn.Cell):
    """diffusers ``BasicTransformerBlock`` with norm_type="layer_norm" (pre-LayerNorm residual sub-blocks):
    norm1 -> attn1 (self-attention; cross-attention with ``only_cross_attention``), norm2 -> attn2
    (cross-attention on ``encoder_hidden_states``; self-attention with ``double_self_attention``; absent
    when neither ``cross_attention_dim`` nor ``double_self_attention``), norm3 -> ff (GEGLU by default).
    With ``positional_embeddings="sinusoidal"`` (AnimateDiff's motion modules) ``pos_embed`` is added
    to the normalised input of attn1 and attn2.

    Works on any token sequence (B, S, dim): spatial tokens of a frame, or frames of one spatial
    position (temporal attention) once the caller has moved the axes.
    """

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, dropout: float = 0.0,
                 cross_attention_dim: int | None = None, activation_fn: str = "geglu",
                 num_embeds_ada_norm: int | None = None, attention_bias: bool = False,
                 only_cross_attention: bool = False, double_self_attention: bool = False,
                 upcast_attention: bool = False, norm_elementwise_affine: bool = True,
                 norm_type: str = "layer_norm", norm_eps: float = 1e-5, final_dropout: bool = False,
                 attention_type: str = "default", positional_embeddings: str | None = None,
                 num_positional_embeddings: int | None = None, ff_inner_dim: int | None = None,
                 ff_bias: bool = True, attention_out_bias: bool = True):
        super().__init__()
        _unsupported("BasicTransformerBlock", norm_type=(norm_type, ("layer_norm",)),
                     num_embeds_ada_norm=(num_embeds_ada_norm, (None,)), attention_type=(attention_type, ("default",)),
                     positional_embeddings=(positional_embeddings, (None, "sinusoidal")))
        if positional_embeddings and num_positional_embeddings is None:
            raise ValueError("BasicTransformerBlock: positional_embeddings needs num_positional_embeddings")
        self.only_cross_attention = only_cross_attention
        self.pos_embed = (SinusoidalPositionalEmbedding(dim, num_positional_embeddings)
                          if positional_embeddings else None)
        self.norm1 = LayerNorm(dim, norm_eps, norm_elementwise_affine)
        self.attn1 = Attention(dim, heads=num_attention_heads, dim_head=attention_head_dim, bias=attention_bias,
                               out_bias=attention_out_bias,
                               cross_attention_dim=cross_attention_dim if only_cross_attention else None)
        if cross_attention_dim is not None or double_self_attention:
            self.norm2 = LayerNorm(dim, norm_eps, norm_elementwise_affine)
            self.attn2 = Attention(dim, heads=num_attention_heads, dim_head=attention_head_dim,
                                   bias=attention_bias, out_bias=attention_out_bias,
                                   cross_attention_dim=None if double_self_attention else cross_attention_dim)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = LayerNorm(dim, norm_eps, norm_elementwise_affine)
        self.ff = FeedForward(dim, activation_fn=activation_fn, inner_dim=ff_inner_dim, bias=ff_bias)

    def construct(self, hidden_states, encoder_hidden_states=None):
        x = self.norm1(hidden_states)
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        hidden_states = hidden_states + self.attn1(
            x, context=encoder_hidden_states if self.only_cross_attention else None)
        if self.attn2 is not None:
            x = self.norm2(hidden_states)
            if self.pos_embed is not None:
                x = self.pos_embed(x)
            # encoder_hidden_states=None makes attn2 a self-attention, as in diffusers
            hidden_states = hidden_states + self.attn2(x, context=encoder_hidden_states)
        return hidden_states + self.ff(self.norm3(hidden_states))


class Transformer2DModel(ModelMixin):
    """diffusers ``Transformer2DModel`` for continuous (B, C, H, W) input, the SD spatial transformer:
    ``norm`` (GroupNorm, eps 1e-6) -> ``proj_in`` (1x1 conv, or linear on tokens with
    ``use_linear_projection``) -> ``transformer_blocks`` over the H*W tokens -> ``proj_out`` -> + input.
    Patched (DiT/PixArt) and vectorised inputs are other networks and are refused."""

    ignored_config_keys = ("dropout", "upcast_attention", "sample_size")

    def __init__(self, num_attention_heads: int = 16, attention_head_dim: int = 88, in_channels: int | None = None,
                 out_channels: int | None = None, num_layers: int = 1, dropout: float = 0.0,
                 norm_num_groups: int = 32, cross_attention_dim: int | None = None, attention_bias: bool = False,
                 sample_size: int | None = None, num_vector_embeds: int | None = None, patch_size: int | None = None,
                 activation_fn: str = "geglu", num_embeds_ada_norm: int | None = None,
                 use_linear_projection: bool = False, only_cross_attention: bool = False,
                 double_self_attention: bool = False, upcast_attention: bool = False,
                 norm_type: str = "layer_norm", norm_elementwise_affine: bool = True, norm_eps: float = 1e-5,
                 attention_type: str = "default", caption_channels: int | None = None,
                 interpolation_scale: float | None = None, use_additional_conditions: bool | None = None):
        super().__init__()
        _unsupported("Transformer2DModel", num_vector_embeds=(num_vector_embeds, (None,)),
                     patch_size=(patch_size, (None,)), caption_channels=(caption_channels, (None,)),
                     norm_type=(norm_type, ("layer_norm",)), num_embeds_ada_norm=(num_embeds_ada_norm, (None,)))
        if in_channels is None:
            raise ValueError("Transformer2DModel: in_channels is required (continuous input)")
        inner = num_attention_heads * attention_head_dim
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.use_linear_projection = use_linear_projection
        self.norm = GroupNorm(norm_num_groups, in_channels, eps=1e-6)
        if use_linear_projection:
            self.proj_in = linear(in_channels, inner)
        else:
            self.proj_in = Conv2d(in_channels, inner, 1)
        self.transformer_blocks = nn.CellList([
            BasicTransformerBlock(inner, num_attention_heads, attention_head_dim,
                                  cross_attention_dim=cross_attention_dim, activation_fn=activation_fn,
                                  attention_bias=attention_bias, only_cross_attention=only_cross_attention,
                                  double_self_attention=double_self_attention,
                                  norm_elementwise_affine=norm_elementwise_affine, norm_eps=norm_eps,
                                  attention_type=attention_type)
            for _ in range(num_layers)])
        if use_linear_projection:
            self.proj_out = linear(inner, self.out_channels)
        else:
            self.proj_out = Conv2d(inner, self.out_channels, 1)

    def construct(self, hidden_states, encoder_hidden_states=None):
        b, _, h, w = hidden_states.shape
        residual = hidden_states
        x = self.norm(hidden_states)
        if not self.use_linear_projection:
            x = self.proj_in(x)
        x = channels_last_rows(x).reshape(b, h * w, x.shape[1])
        if self.use_linear_projection:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states)
        if self.use_linear_projection:
            x = self.proj_out(x)
        x = channels_first(x.reshape(b * h * w, -1), b, (h, w))
        if not self.use_linear_projection:
            x = self.proj_out(x)
        return x + residual


# ----------------------------------------------------------------------------- UNet down / mid / up blocks


def _per_layer(value, num_layers: int) -> list:
    return [value] * num_layers if isinstance(value, int) else list(value)


def _resnet(in_channels, out_channels, temb_channels, resnet_eps, resnet_groups, resnet_time_scale_shift,
            resnet_act_fn, output_scale_factor, groups_out=None):
    return ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels,
                         eps=resnet_eps, groups=resnet_groups, groups_out=groups_out,
                         time_embedding_norm=resnet_time_scale_shift, non_linearity=resnet_act_fn,
                         output_scale_factor=output_scale_factor)


def _transformer(channels, num_attention_heads, num_layers, cross_attention_dim, norm_num_groups,
                 use_linear_projection, only_cross_attention=False):
    return Transformer2DModel(num_attention_heads, channels // num_attention_heads, in_channels=channels,
                              num_layers=num_layers, cross_attention_dim=cross_attention_dim,
                              norm_num_groups=norm_num_groups, use_linear_projection=use_linear_projection,
                              only_cross_attention=only_cross_attention)


def _check_dual(where, dual_cross_attention, attention_type):
    _unsupported(where, dual_cross_attention=(dual_cross_attention, (False,)),
                 attention_type=(attention_type, ("default",)))


class DownBlock2D(nn.Cell):
    """``num_layers`` ResnetBlock2D, then an optional stride-2 conv ``downsamplers.0``. Returns the
    hidden states and the skip tensors (each resnet's output, then the downsampled output)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int | None, dropout: float = 0.0,
                 num_layers: int = 1, resnet_eps: float = 1e-6, resnet_time_scale_shift: str = "default",
                 resnet_act_fn: str = "swish", resnet_groups: int = 32, resnet_pre_norm: bool = True,
                 output_scale_factor: float = 1.0, add_downsample: bool = True, downsample_padding: int = 1):
        super().__init__()
        self.resnets = nn.CellList([
            _resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, resnet_eps, resnet_groups,
                    resnet_time_scale_shift, resnet_act_fn, output_scale_factor) for i in range(num_layers)])
        self.downsamplers = (nn.CellList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                       padding=downsample_padding, name="op")])
                             if add_downsample else None)

    def construct(self, hidden_states, temb=None):
        output_states = ()
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb)
            output_states += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class CrossAttnDownBlock2D(nn.Cell):
    """``num_layers`` (ResnetBlock2D -> Transformer2DModel) pairs, then an optional ``downsamplers.0``.
    ``num_attention_heads`` heads of width out_channels // num_attention_heads."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int | None, dropout: float = 0.0,
                 num_layers: int = 1, transformer_layers_per_block: int | tuple = 1, resnet_eps: float = 1e-6,
                 resnet_time_scale_shift: str = "default", resnet_act_fn: str = "swish", resnet_groups: int = 32,
                 resnet_pre_norm: bool = True, num_attention_heads: int = 1, cross_attention_dim: int = 1280,
                 output_scale_factor: float = 1.0, downsample_padding: int = 1, add_downsample: bool = True,
                 dual_cross_attention: bool = False, use_linear_projection: bool = False,
                 only_cross_attention: bool = False, upcast_attention: bool = False, attention_type: str = "default"):
        super().__init__()
        _check_dual("CrossAttnDownBlock2D", dual_cross_attention, attention_type)
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nn.CellList([
            _resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, resnet_eps, resnet_groups,
                    resnet_time_scale_shift, resnet_act_fn, output_scale_factor) for i in range(num_layers)])
        self.attentions = nn.CellList([
            _transformer(out_channels, num_attention_heads, layers[i], cross_attention_dim, resnet_groups,
                         use_linear_projection, only_cross_attention) for i in range(num_layers)])
        self.downsamplers = (nn.CellList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                       padding=downsample_padding, name="op")])
                             if add_downsample else None)

    def construct(self, hidden_states, temb=None, encoder_hidden_states=None):
        output_states = ()
        for resnet, attn in zip(self.resnets, self.attentions):
            hidden_states = resnet(hidden_states, temb)
            hidden_states = attn(hidden_states, encoder_hidden_states)
            output_states += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class UNetMidBlock2DCrossAttn(nn.Cell):
    """ResnetBlock2D, then ``num_layers`` (Transformer2DModel -> ResnetBlock2D) pairs."""

    def __init__(self, in_channels: int, temb_channels: int | None, out_channels: int | None = None,
                 dropout: float = 0.0, num_layers: int = 1, transformer_layers_per_block: int | tuple = 1,
                 resnet_eps: float = 1e-6, resnet_time_scale_shift: str = "default", resnet_act_fn: str = "swish",
                 resnet_groups: int | None = 32, resnet_groups_out: int | None = None, resnet_pre_norm: bool = True,
                 num_attention_heads: int = 1, output_scale_factor: float = 1.0, cross_attention_dim: int = 1280,
                 dual_cross_attention: bool = False, use_linear_projection: bool = False,
                 upcast_attention: bool = False, attention_type: str = "default"):
        super().__init__()
        _check_dual("UNetMidBlock2DCrossAttn", dual_cross_attention, attention_type)
        out_channels = out_channels or in_channels
        resnet_groups = resnet_groups if resnet_groups is not None else min(in_channels // 4, 32)
        resnet_groups_out = resnet_groups_out or resnet_groups
        layers = _per_layer(transformer_layers_per_block, num_layers)
        args = (temb_channels, resnet_eps)
        shift = (resnet_time_scale_shift, resnet_act_fn, output_scale_factor)
        self.resnets = nn.CellList(
            [_resnet(in_channels, out_channels, *args, resnet_groups, *shift, groups_out=resnet_groups_out)]
            + [_resnet(out_channels, out_channels, *args, resnet_groups_out, *shift) for _ in range(num_layers)])
        self.attentions = nn.CellList([
            _transformer(out_channels, num_attention_heads, layers[i], cross_attention_dim, resnet_groups_out,
                         use_linear_projection) for i in range(num_layers)])

    def construct(self, hidden_states, temb=None, encoder_hidden_states=None):
        hidden_states = self.resnets[0](hidden_states, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            hidden_states = attn(hidden_states, encoder_hidden_states)
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


class UNetMidBlock2D(nn.Cell):
    """ResnetBlock2D, then ``num_layers`` (GroupNormAttention -> ResnetBlock2D) pairs (the attention left
    out with ``add_attention=False``); the VAE's mid block (temb_channels=None)."""

    def __init__(self, in_channels: int, temb_channels: int | None, dropout: float = 0.0, num_layers: int = 1,
                 resnet_eps: float = 1e-6, resnet_time_scale_shift: str = "default", resnet_act_fn: str = "swish",
                 resnet_groups: int | None = 32, attn_groups: int | None = None, resnet_pre_norm: bool = True,
                 add_attention: bool = True, attention_head_dim: int | None = 1, output_scale_factor: float = 1.0):
        super().__init__()
        _unsupported("UNetMidBlock2D", resnet_time_scale_shift=(resnet_time_scale_shift, ("default", "group")))
        resnet_groups = resnet_groups if resnet_groups is not None else min(in_channels // 4, 32)
        if attn_groups is None:  # diffusers: the resnets' groups, except with conditioned norms
            attn_groups = resnet_groups if resnet_time_scale_shift == "default" else None
        attention_head_dim = attention_head_dim or in_channels
        self.add_attention = add_attention
        shift = (resnet_time_scale_shift, resnet_act_fn, output_scale_factor)
        self.resnets = nn.CellList([_resnet(in_channels, in_channels, temb_channels, resnet_eps, resnet_groups, *shift)
                                    for _ in range(num_layers + 1)])
        self.attentions = nn.CellList([
            GroupNormAttention(in_channels, heads=in_channels // attention_head_dim, dim_head=attention_head_dim,
                               bias=True, norm_num_groups=attn_groups, eps=resnet_eps, residual_connection=True,
                               rescale_output_factor=output_scale_factor)
            for _ in range(num_layers if add_attention else 0)])

    def construct(self, hidden_states, temb=None):
        hidden_states = self.resnets[0](hidden_states, temb)
        for i, resnet in enumerate(self.resnets[1:]):
            if self.add_attention:
                hidden_states = self.attentions[i](hidden_states)
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


class UpBlock2D(nn.Cell):
    """``num_layers`` ResnetBlock2D, each fed the hidden states concatenated (on channels) with the last
    remaining skip tensor, then an optional nearest-2x + conv ``upsamplers.0`` (to ``upsample_size``
    when given)."""

    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int | None,
                 resolution_idx: int | None = None, dropout: float = 0.0, num_layers: int = 1,
                 resnet_eps: float = 1e-6, resnet_time_scale_shift: str = "default", resnet_act_fn: str = "swish",
                 resnet_groups: int = 32, resnet_pre_norm: bool = True, output_scale_factor: float = 1.0,
                 add_upsample: bool = True):
        super().__init__()
        self.resnets = nn.CellList([
            _resnet(_up_resnet_in(i, num_layers, in_channels, prev_output_channel, out_channels), out_channels,
                    temb_channels, resnet_eps, resnet_groups, resnet_time_scale_shift, resnet_act_fn,
                    output_scale_factor) for i in range(num_layers)])
        self.upsamplers = (nn.CellList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
                           if add_upsample else None)
        self.resolution_idx = resolution_idx

    def construct(self, hidden_states, res_hidden_states_tuple, temb=None, upsample_size=None):
        n = len(res_hidden_states_tuple)
        for i, resnet in enumerate(self.resnets):
            hidden_states = ops.cat([hidden_states, res_hidden_states_tuple[n - 1 - i]], 1)
            hidden_states = resnet(hidden_states, temb)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states


def _up_resnet_in(i: int, num_layers: int, in_channels: int, prev_output_channel: int, out_channels: int) -> int:
    """Input channels of the i-th resnet of an up block: previous features + the skip it concatenates."""
    res_skip_channels = in_channels if i == num_layers - 1 else out_channels
    resnet_in_channels = prev_output_channel if i == 0 else out_channels
    return resnet_in_channels + res_skip_channels


class CrossAttnUpBlock2D(nn.Cell):
    """UpBlock2D with a Transformer2DModel after each resnet."""

    def __init__(self, in_channels: int, out_channels: int, prev_output_channel: int, temb_channels: int | None,
                 resolution_idx: int | None = None, dropout: float = 0.0, num_layers: int = 1,
                 transformer_layers_per_block: int | tuple = 1, resnet_eps: float = 1e-6,
                 resnet_time_scale_shift: str = "default", resnet_act_fn: str = "swish", resnet_groups: int = 32,
                 resnet_pre_norm: bool = True, num_attention_heads: int = 1, cross_attention_dim: int = 1280,
                 output_scale_factor: float = 1.0, add_upsample: bool = True, dual_cross_attention: bool = False,
                 use_linear_projection: bool = False, only_cross_attention: bool = False,
                 upcast_attention: bool = False, attention_type: str = "default"):
        super().__init__()
        _check_dual("CrossAttnUpBlock2D", dual_cross_attention, attention_type)
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nn.CellList([
            _resnet(_up_resnet_in(i, num_layers, in_channels, prev_output_channel, out_channels), out_channels,
                    temb_channels, resnet_eps, resnet_groups, resnet_time_scale_shift, resnet_act_fn,
                    output_scale_factor) for i in range(num_layers)])
        self.attentions = nn.CellList([
            _transformer(out_channels, num_attention_heads, layers[i], cross_attention_dim, resnet_groups,
                         use_linear_projection, only_cross_attention) for i in range(num_layers)])
        self.upsamplers = (nn.CellList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
                           if add_upsample else None)
        self.resolution_idx = resolution_idx

    def construct(self, hidden_states, res_hidden_states_tuple, temb=None, encoder_hidden_states=None,
                  upsample_size=None):
        n = len(res_hidden_states_tuple)
        for i, (resnet, attn) in enumerate(zip(self.resnets, self.attentions)):
            hidden_states = ops.cat([hidden_states, res_hidden_states_tuple[n - 1 - i]], 1)
            hidden_states = resnet(hidden_states, temb)
            hidden_states = attn(hidden_states, encoder_hidden_states)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states


# ----------------------------------------------------------------------------- KL autoencoder encoder / decoder


class DownEncoderBlock2D(nn.Cell):
    """``num_layers`` ResnetBlock2D without time input, then an optional ``downsamplers.0``."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, num_layers: int = 1,
                 resnet_eps: float = 1e-6, resnet_time_scale_shift: str = "default", resnet_act_fn: str = "swish",
                 resnet_groups: int = 32, resnet_pre_norm: bool = True, output_scale_factor: float = 1.0,
                 add_downsample: bool = True, downsample_padding: int = 1):
        super().__init__()
        self.resnets = nn.CellList([
            _resnet(in_channels if i == 0 else out_channels, out_channels, None, resnet_eps, resnet_groups,
                    resnet_time_scale_shift, resnet_act_fn, output_scale_factor) for i in range(num_layers)])
        self.downsamplers = (nn.CellList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                       padding=downsample_padding, name="op")])
                             if add_downsample else None)

    def construct(self, hidden_states):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
        return hidden_states


class UpDecoderBlock2D(nn.Cell):
    """``num_layers`` ResnetBlock2D (no skip inputs), then an optional nearest-2x + conv ``upsamplers.0``."""

    def __init__(self, in_channels: int, out_channels: int, resolution_idx: int | None = None,
                 dropout: float = 0.0, num_layers: int = 1, resnet_eps: float = 1e-6,
                 resnet_time_scale_shift: str = "default", resnet_act_fn: str = "swish", resnet_groups: int = 32,
                 resnet_pre_norm: bool = True, output_scale_factor: float = 1.0, add_upsample: bool = True,
                 temb_channels: int | None = None):
        super().__init__()
        self.resnets = nn.CellList([
            _resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, resnet_eps, resnet_groups,
                    resnet_time_scale_shift, resnet_act_fn, output_scale_factor) for i in range(num_layers)])
        self.upsamplers = (nn.CellList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
                           if add_upsample else None)
        self.resolution_idx = resolution_idx

    def construct(self, hidden_states, temb=None):
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states)
        return hidden_states


class Encoder(nn.Cell):
    """diffusers ``autoencoders.vae.Encoder``: conv_in -> DownEncoderBlock2D x len(block_out_channels)
    (all but the last halve the size; their conv pads bottom/right only) -> UNetMidBlock2D (one
    single-head attention) -> conv_norm_out -> SiLU -> conv_out to 2 x out_channels (mean, logvar)
    with ``double_z``."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, down_block_types: tuple = ("DownEncoderBlock2D",),
                 block_out_channels: tuple = (64,), layers_per_block: int = 2, norm_num_groups: int = 32,
                 act_fn: str = "silu", double_z: bool = True, mid_block_add_attention: bool = True):
        super().__init__()
        bad = [t for t in down_block_types if t != "DownEncoderBlock2D"]
        if bad or len(down_block_types) != len(block_out_channels):
            raise ValueError(f"Encoder down_block_types={list(down_block_types)}: expected "
                             f"{len(block_out_channels)} x 'DownEncoderBlock2D'")
        self.conv_in = Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        blocks, out_ch = [], block_out_channels[0]
        for i, ch in enumerate(block_out_channels):
            in_ch, out_ch = out_ch, ch
            blocks.append(DownEncoderBlock2D(in_ch, out_ch, num_layers=layers_per_block, resnet_eps=1e-6,
                                             resnet_act_fn=act_fn, resnet_groups=norm_num_groups,
                                             add_downsample=i < len(block_out_channels) - 1, downsample_padding=0))
        self.down_blocks = nn.CellList(blocks)
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], None, resnet_eps=1e-6, resnet_act_fn=act_fn,
                                        resnet_groups=norm_num_groups, attention_head_dim=block_out_channels[-1],
                                        add_attention=mid_block_add_attention)
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.act = activation(act_fn)
        self.conv_out = Conv2d(block_out_channels[-1], 2 * out_channels if double_z else out_channels, 3, padding=1)

    def construct(self, sample):
        sample = self.conv_in(sample)
        for block in self.down_blocks:
            sample = block(sample)
        sample = self.mid_block(sample)
        return self.conv_out(self.act(self.conv_norm_out(sample)))


class Decoder(nn.Cell):
    """diffusers ``autoencoders.vae.Decoder`` (norm_type="group"): conv_in -> UNetMidBlock2D ->
    UpDecoderBlock2D x len(block_out_channels) (layers_per_block + 1 resnets each; all but the last
    double the size) -> conv_norm_out -> SiLU -> conv_out."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, up_block_types: tuple = ("UpDecoderBlock2D",),
                 block_out_channels: tuple = (64,), layers_per_block: int = 2, norm_num_groups: int = 32,
                 act_fn: str = "silu", norm_type: str = "group", mid_block_add_attention: bool = True):
        super().__init__()
        _unsupported("Decoder", norm_type=(norm_type, ("group",)))
        bad = [t for t in up_block_types if t != "UpDecoderBlock2D"]
        if bad or len(up_block_types) != len(block_out_channels):
            raise ValueError(f"Decoder up_block_types={list(up_block_types)}: expected "
                             f"{len(block_out_channels)} x 'UpDecoderBlock2D'")
        self.conv_in = Conv2d(in_channels, block_out_channels[-1], 3, padding=1)
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], None, resnet_eps=1e-6, resnet_act_fn=act_fn,
                                        resnet_groups=norm_num_groups, attention_head_dim=block_out_channels[-1],
                                        add_attention=mid_block_add_attention)
        reversed_channels = list(reversed(block_out_channels))
        blocks, out_ch = [], reversed_channels[0]
        for i, ch in enumerate(reversed_channels):
            prev, out_ch = out_ch, ch
            blocks.append(UpDecoderBlock2D(prev, out_ch, resolution_idx=None, num_layers=layers_per_block + 1,
                                           resnet_eps=1e-6, resnet_act_fn=act_fn, resnet_groups=norm_num_groups,
                                           add_upsample=i < len(block_out_channels) - 1,
                                           resnet_time_scale_shift=norm_type))
        self.up_blocks = nn.CellList(blocks)
        self.conv_norm_out = GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-6)
        self.act = activation(act_fn)
        self.conv_out = Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def construct(self, sample):
        sample = self.conv_in(sample)
        sample = self.mid_block(sample)
        for block in self.up_blocks:
            sample = block(sample)
        return self.conv_out(self.act(self.conv_norm_out(sample)))


def per_block(owner: str, name: str, value, n: int) -> list:
    """A UNet config value given once for all blocks or once per block, as a list of ``n`` entries."""
    if isinstance(value, (int, float, bool)) or value is None:
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{owner}: {name}={value} must have one entry per block ({n})")
    return value


def repeat_per_frame(x, frames: int):
    """(B, ...) -> (B * frames, ...): each video's tensor for every one of its frames, frames folded
    into the batch (diffusers' ``repeat_interleave(frames, dim=0)``)."""
    b = x.shape[0]
    return ops.broadcast_to(x[:, None], (b, frames) + tuple(x.shape[1:])).reshape((b * frames,) + tuple(x.shape[1:]))
