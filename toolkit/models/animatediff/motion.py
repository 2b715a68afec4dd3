"""AnimateDiff's motion modules and the MotionAdapter checkpoint that holds them.

Port of diffusers' ``models/unets/unet_motion_model.py`` (``AnimateDiffTransformer3D``, ``MotionModules``,
``MotionAdapter``; Guo et al. 2023, "AnimateDiff", https://arxiv.org/abs/2307.04725). A motion module is a
temporal transformer: at every spatial position of a feature map, the frames form a token sequence that goes
through ``BasicTransformerBlock``s (the shared block of ``toolkit/models/unet_blocks.py``: two self-attentions
over frames, each input offset by a sinusoidal frame-position table ``pos_embed.pe``, then a GEGLU
feed-forward), and the result is added to the input. Parameter names and config keys are diffusers'.

Frames travel folded into the batch axis, as the spatial layers want them: a motion module takes
(B * F, C, H, W) with ``num_frames = F`` and returns the same shape.
"""
from __future__ import annotations

from mindspore import nn

from toolkit.models.base import ModelMixin
from toolkit.models.layers import GroupNorm, linear, permute, swap_middle_axes
from toolkit.models.unet_blocks import BasicTransformerBlock


def per_layer(name: str, value, num_layers: int) -> list:
    """An int for every layer, or one entry per layer (diffusers' per-layer config lists)."""
    if isinstance(value, int):
        return [value] * num_layers
    value = list(value)
    if len(value) != num_layers:
        raise ValueError(f"{name}={value} must be an integer or have one entry per layer ({num_layers})")
    return value


class AnimateDiffTransformer3D(nn.Cell):
    """GroupNorm over (C; F, H, W) of each video -> ``proj_in`` -> transformer blocks along the frame axis at
    each spatial position -> ``proj_out`` -> + input.

    The norm's statistics span all frames of a video (diffusers normalises the (B, C, F, H, W) tensor).
    """

    def __init__(self, num_attention_heads: int = 16, attention_head_dim: int = 88, in_channels: int | None = None,
                 out_channels: int | None = None, num_layers: int = 1, dropout: float = 0.0,
                 norm_num_groups: int = 32, cross_attention_dim: int | None = None, attention_bias: bool = False,
                 sample_size: int | None = None, activation_fn: str = "geglu", norm_elementwise_affine: bool = True,
                 double_self_attention: bool = True, positional_embeddings: str | None = None,
                 num_positional_embeddings: int | None = None):
        super().__init__()
        if in_channels is None:
            raise ValueError("AnimateDiffTransformer3D: in_channels is required")
        inner = num_attention_heads * attention_head_dim
        self.norm = GroupNorm(norm_num_groups, in_channels, eps=1e-6)
        self.proj_in = linear(in_channels, inner)
        self.transformer_blocks = nn.CellList([
            BasicTransformerBlock(inner, num_attention_heads, attention_head_dim,
                                  cross_attention_dim=cross_attention_dim, activation_fn=activation_fn,
                                  attention_bias=attention_bias,
                                  double_self_attention=double_self_attention,
                                  norm_elementwise_affine=norm_elementwise_affine,
                                  positional_embeddings=positional_embeddings,
                                  num_positional_embeddings=num_positional_embeddings)
            for _ in range(num_layers)])
        self.proj_out = linear(inner, in_channels)

    def construct(self, hidden_states, num_frames: int, encoder_hidden_states=None):
        bf, c, h, w = hidden_states.shape
        b = bf // num_frames
        x = swap_middle_axes(hidden_states, b, num_frames, c).reshape(b, c, num_frames, h, w)  # (B, C, F, H, W)
        x = self.norm(x)
        x = permute(x, (0, 3, 4, 2, 1)).reshape(b * h * w, num_frames, c)  # one frame sequence per position
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states)
        x = self.proj_out(x)
        x = permute(x.reshape(b, h, w, num_frames, c), (0, 3, 4, 1, 2)).reshape(bf, c, h, w)
        return x + hidden_states


def motion_modules(channels: int, num_layers: int, num_attention_heads: int, transformer_layers, norm_num_groups: int,
                   max_seq_length: int, *, where: str = "motion modules") -> nn.CellList:
    """The ``motion_modules`` list of one UNet block (or of one MotionAdapter block): ``num_layers`` temporal
    transformers on ``channels`` features, ``num_attention_heads`` heads of ``channels // heads`` channels,
    sinusoidal positions for up to ``max_seq_length`` frames. ``transformer_layers``: transformer blocks per
    module, an int or one per module."""
    layers = per_layer(f"{where}: transformer layers per motion module", transformer_layers, num_layers)
    return nn.CellList([
        AnimateDiffTransformer3D(num_attention_heads=num_attention_heads,
                                 attention_head_dim=channels // num_attention_heads, in_channels=channels,
                                 num_layers=layers[i], norm_num_groups=norm_num_groups, attention_bias=False,
                                 activation_fn="geglu", positional_embeddings="sinusoidal",
                                 num_positional_embeddings=max_seq_length, double_self_attention=True)
        for i in range(num_layers)])


class MotionModules(nn.Cell):
    """One MotionAdapter block: a ``motion_modules`` list (diffusers' ``MotionModules``)."""

    def __init__(self, in_channels: int, layers_per_block: int = 2, transformer_layers_per_block=8,
                 num_attention_heads: int = 8, norm_num_groups: int = 32, max_seq_length: int = 32):
        super().__init__()
        self.motion_modules = motion_modules(in_channels, layers_per_block, num_attention_heads,
                                             transformer_layers_per_block, norm_num_groups, max_seq_length)


class MotionAdapter(ModelMixin):
    """The motion-adapter checkpoint (``guoyww/animatediff-motion-adapter-*``): ``down_blocks.i.motion_modules.j``
    (``motion_layers_per_block`` per UNet down block), ``mid_block.motion_modules.j`` (with
    ``use_motion_mid_block``), ``up_blocks.i.motion_modules.j`` (one more per up block, as the UNet's up blocks
    have one more resnet). It has no forward pass of its own: ``UNetMotionModel`` interleaves these modules
    with a UNet's layers, reading the same checkpoint keys.

    ``conv_in_channels`` (PIA's image-conditioned input conv) is refused: it changes the UNet's input.
    """

    def __init__(self, block_out_channels: tuple = (320, 640, 1280, 1280), motion_layers_per_block=2,
                 motion_transformer_layers_per_block=1, motion_mid_block_layers_per_block: int = 1,
                 motion_transformer_layers_per_mid_block=1, motion_num_attention_heads=8,
                 motion_norm_num_groups: int = 32, motion_max_seq_length: int = 32, use_motion_mid_block: bool = True,
                 conv_in_channels: int | None = None):
        super().__init__()
        if conv_in_channels:
            raise ValueError(f"MotionAdapter: conv_in_channels={conv_in_channels} (a PIA adapter, which also "
                             "replaces the UNet's input conv) is not supported")
        n = len(block_out_channels)
        layers = per_layer("motion_layers_per_block", motion_layers_per_block, n)
        t_layers = ([motion_transformer_layers_per_block] * n if isinstance(motion_transformer_layers_per_block, int)
                    else list(motion_transformer_layers_per_block))
        heads = per_layer("motion_num_attention_heads", motion_num_attention_heads, n)
        common = dict(norm_num_groups=motion_norm_num_groups, max_seq_length=motion_max_seq_length)
        self.down_blocks = nn.CellList([
            MotionModules(c, layers[i], t_layers[i], heads[i], **common) for i, c in enumerate(block_out_channels)])
        self.mid_block = (MotionModules(block_out_channels[-1], motion_mid_block_layers_per_block,
                                        motion_transformer_layers_per_mid_block, heads[-1], **common)
                          if use_motion_mid_block else None)
        self.up_blocks = nn.CellList([
            MotionModules(c, n_layers + 1, t, h, **common)
            for c, n_layers, t, h in zip(reversed(block_out_channels), reversed(layers), reversed(t_layers),
                                         reversed(heads))])


__all__ = ["AnimateDiffTransformer3D", "MotionModules", "MotionAdapter", "motion_modules", "per_layer"]
