"""Stable Video Diffusion's spatio-temporal blocks: a 2-D block applied to every frame, a temporal block
across the frames of every pixel / token, and a learned blend of the two.

Ports of diffusers' ``models/resnet.py`` (``TemporalResnetBlock``, ``SpatioTemporalResBlock``,
``AlphaBlender``), ``models/attention.py`` (``TemporalBasicTransformerBlock``) and
``models/transformers/transformer_temporal.py`` (``TransformerSpatioTemporalModel``). The 2-D halves are the
shared ``ResnetBlock2D`` / ``BasicTransformerBlock`` of ``toolkit/models/unet_blocks.py``. Parameter names are
diffusers'.

Layout: frames folded into the batch axis, (B*F, C, H, W), as diffusers keeps them; every block takes
``num_frames`` to unfold them. diffusers also passes an ``image_only_indicator`` (B, F) that marks frames to be
treated as still images; Stable Video Diffusion always passes zeros (every frame is a video frame), so the
blend factor is ``sigmoid(mix_factor)`` and the indicator is left out here.
"""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from toolkit.models.layers import (
    Attention,
    Conv3d,
    FeedForward,
    GroupNorm,
    LayerNorm,
    TimestepEmbedding,
    add_channel_bias,
    channels_first,
    channels_last_rows,
    linear,
    scaled_dot_product_attention,
    silu,
    swap_middle_axes,
)
from toolkit.models.unet_blocks import BasicTransformerBlock, ResnetBlock2D, Timesteps

MERGE_STRATEGIES = ("learned", "fixed", "learned_with_images")


class AlphaBlender(nn.Cell):
    """``alpha * x_spatial + (1 - alpha) * x_temporal`` with alpha = sigmoid(mix_factor) ("learned", and
    "learned_with_images" when no frame is image-only) or mix_factor itself ("fixed");
    ``switch_spatial_to_temporal_mix`` (the temporal VAE decoder) uses 1 - alpha. ``mix_factor`` is a (1,)
    parameter (a buffer for "fixed"; both are stored in checkpoints)."""

    def __init__(self, alpha: float, merge_strategy: str = "learned_with_images",
                 switch_spatial_to_temporal_mix: bool = False):
        super().__init__()
        if merge_strategy not in MERGE_STRATEGIES:
            raise ValueError(f"AlphaBlender merge_strategy={merge_strategy!r}: supported {list(MERGE_STRATEGIES)}")
        self.merge_strategy = merge_strategy
        self.switch = switch_spatial_to_temporal_mix
        self.mix_factor = Parameter(Tensor(np.array([alpha], np.float32)), requires_grad=merge_strategy != "fixed")

    def construct(self, x_spatial, x_temporal):
        alpha = self.mix_factor if self.merge_strategy == "fixed" else ops.sigmoid(self.mix_factor)
        if self.switch:
            alpha = 1.0 - alpha
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


class TemporalResnetBlock(nn.Cell):
    """ResnetBlock2D's structure with (3, 1, 1) convolutions over (B, C, F, H, W): mixes each pixel with its
    neighbouring frames. ``temb`` (B, F, temb_channels) is projected and added per frame."""

    def __init__(self, in_channels: int, out_channels: int | None = None, temb_channels: int | None = 512,
                 eps: float = 1e-6):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = GroupNorm(32, in_channels, eps=eps)
        self.conv1 = Conv3d(in_channels, out_channels, (3, 1, 1), padding=(1, 0, 0))
        self.time_emb_proj = linear(temb_channels, out_channels) if temb_channels is not None else None
        self.norm2 = GroupNorm(32, out_channels, eps=eps)
        self.conv2 = Conv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0))
        self.conv_shortcut = Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def construct(self, input_tensor, temb=None):
        h = self.conv1(silu(self.norm1(input_tensor)))
        if self.time_emb_proj is not None:
            temb = self.time_emb_proj(silu(temb))  # (B, F, C)
            h = add_channel_bias(h, temb.transpose(0, 2, 1))  # per (sample, channel, frame)
        h = self.conv2(silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return input_tensor + h


def fold_frames(x, num_frames: int):
    """(B*F, C, H, W) -> (B, C, F, H, W)."""
    bf, c, h, w = x.shape
    return swap_middle_axes(x, bf // num_frames, num_frames, c).reshape(bf // num_frames, c, num_frames, h, w)


def unfold_frames(x):
    """(B, C, F, H, W) -> (B*F, C, H, W)."""
    b, c, f, h, w = x.shape
    return swap_middle_axes(x, b, c, f).reshape(b * f, c, h, w)


class SpatioTemporalResBlock(nn.Cell):
    """``spatial_res_block`` (ResnetBlock2D on every frame), then ``temporal_res_block`` across frames, blended by
    ``time_mixer``. (B*F, C, H, W) -> (B*F, C', H, W); ``temb`` (B*F, temb_channels) or None."""

    def __init__(self, in_channels: int, out_channels: int | None = None, temb_channels: int | None = 512,
                 eps: float = 1e-6, temporal_eps: float | None = None, merge_factor: float = 0.5,
                 merge_strategy: str = "learned_with_images", switch_spatial_to_temporal_mix: bool = False):
        super().__init__()
        out = out_channels if out_channels is not None else in_channels
        self.spatial_res_block = ResnetBlock2D(in_channels=in_channels, out_channels=out_channels,
                                               temb_channels=temb_channels, eps=eps)
        self.temporal_res_block = TemporalResnetBlock(out, out, temb_channels,
                                                      eps=temporal_eps if temporal_eps is not None else eps)
        self.time_mixer = AlphaBlender(merge_factor, merge_strategy, switch_spatial_to_temporal_mix)

    def construct(self, hidden_states, temb, num_frames: int):
        spatial = fold_frames(self.spatial_res_block(hidden_states, temb), num_frames)
        if temb is not None:
            temb = temb.reshape(spatial.shape[0], num_frames, -1)
        temporal = self.temporal_res_block(spatial, temb)
        return unfold_frames(self.time_mixer(spatial, temporal))


class TemporalBasicTransformerBlock(nn.Cell):
    """Attention across the frames of every token: ``norm_in`` -> ``ff_in`` (GEGLU, residual when the widths
    agree) -> ``norm1`` -> ``attn1`` (self-attention over frames) -> ``norm2`` -> ``attn2`` (cross-attention on
    a per-video context) -> ``norm3`` -> ``ff``. Tokens (B*F, S, C) in and out."""

    def __init__(self, dim: int, time_mix_inner_dim: int, num_attention_heads: int, attention_head_dim: int,
                 cross_attention_dim: int | None = None):
        super().__init__()
        self.is_res = dim == time_mix_inner_dim
        self.norm_in = LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim_out=time_mix_inner_dim, activation_fn="geglu")
        self.norm1 = LayerNorm(time_mix_inner_dim)
        self.attn1 = Attention(time_mix_inner_dim, heads=num_attention_heads, dim_head=attention_head_dim)
        if cross_attention_dim is not None:
            self.norm2 = LayerNorm(time_mix_inner_dim)
            self.attn2 = Attention(time_mix_inner_dim, heads=num_attention_heads, dim_head=attention_head_dim,
                                   cross_attention_dim=cross_attention_dim)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = LayerNorm(time_mix_inner_dim)
        self.ff = FeedForward(time_mix_inner_dim, activation_fn="geglu")

    def _cross_attention(self, x, context):
        """attn2 for x (B*S, F, C) against ``context`` (B, S', D), one context per video. diffusers broadcasts
        the context to every token (B*S, S', D); since every token of a video attends to the same keys, the
        B*S*F queries of a video are taken as one sequence instead (same numbers, no broadcast)."""
        bs, f, c = x.shape
        b = context.shape[0]
        q, k, v = self.attn2.project_qkv(x.reshape(b, (bs // b) * f, c), context)
        return self.attn2.project_out(scaled_dot_product_attention(q, k, v)).reshape(bs, f, -1)

    def construct(self, hidden_states, num_frames: int, encoder_hidden_states=None):
        bf, s, c = hidden_states.shape
        b = bf // num_frames
        x = swap_middle_axes(hidden_states, b, num_frames, s).reshape(b * s, num_frames, c)
        h = self.ff_in(self.norm_in(x))
        if self.is_res:
            h = h + x
        h = self.attn1(self.norm1(h)) + h
        if self.attn2 is not None:
            n = self.norm2(h)
            if encoder_hidden_states is None:
                h = self.attn2(n) + h
            else:
                h = self._cross_attention(n, encoder_hidden_states) + h
        out = self.ff(self.norm3(h))
        if self.is_res:
            out = out + h
        c = out.shape[-1]
        return swap_middle_axes(out, b, s, num_frames).reshape(b * num_frames, s, c)


class TransformerSpatioTemporalModel(nn.Cell):
    """``norm`` (GroupNorm) -> ``proj_in`` (linear on tokens) -> per layer: a spatial ``BasicTransformerBlock``
    over each frame's H*W tokens, then a ``TemporalBasicTransformerBlock`` over frames (its input plus a learned
    embedding of the frame index, ``time_pos_embed(time_proj(f))``), blended by ``time_mixer`` -> ``proj_out`` ->
    + input.

    ``encoder_hidden_states`` (B*F, S', D): the spatial blocks cross-attend to each frame's context, the temporal
    blocks to each video's first-frame context (as diffusers)."""

    def __init__(self, num_attention_heads: int = 16, attention_head_dim: int = 88, in_channels: int = 320,
                 out_channels: int | None = None, num_layers: int = 1, cross_attention_dim: int | None = None):
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        self.in_channels = in_channels
        self.norm = GroupNorm(32, in_channels, eps=1e-6)
        self.proj_in = linear(in_channels, inner)
        self.transformer_blocks = nn.CellList([
            BasicTransformerBlock(inner, num_attention_heads, attention_head_dim,
                                  cross_attention_dim=cross_attention_dim)
            for _ in range(num_layers)])
        self.temporal_transformer_blocks = nn.CellList([
            TemporalBasicTransformerBlock(inner, inner, num_attention_heads, attention_head_dim,
                                          cross_attention_dim=cross_attention_dim)
            for _ in range(num_layers)])
        self.time_pos_embed = TimestepEmbedding(in_channels, in_channels * 4, out_dim=in_channels)
        self.time_proj = Timesteps(in_channels, True, 0)
        self.time_mixer = AlphaBlender(0.5, "learned_with_images")
        self.proj_out = linear(inner, in_channels)  # diffusers: in_channels, whatever out_channels says

    def construct(self, hidden_states, encoder_hidden_states, num_frames: int):
        bf, c, h, w = hidden_states.shape
        b = bf // num_frames
        time_context = None
        if encoder_hidden_states is not None:
            sc, d = encoder_hidden_states.shape[1], encoder_hidden_states.shape[2]
            time_context = encoder_hidden_states.reshape(b, num_frames, sc, d)[:, 0]
        residual = hidden_states
        x = channels_last_rows(self.norm(hidden_states)).reshape(bf, h * w, c)
        x = self.proj_in(x)
        frames = ops.arange(num_frames).astype(hidden_states.dtype)
        pos = self.time_pos_embed(self.time_proj(frames))  # (F, C): the same for every video
        for block, temporal_block in zip(self.transformer_blocks, self.temporal_transformer_blocks):
            x = block(x, encoder_hidden_states)
            inner = x.shape[-1]
            mix = (x.reshape(b, num_frames, h * w, inner) + pos[None, :, None, :]).reshape(bf, h * w, inner)
            mix = temporal_block(mix, num_frames, time_context)
            x = self.time_mixer(x, mix)
        x = self.proj_out(x)
        return channels_first(x.reshape(bf * h * w, -1), bf, (h, w)) + residual
