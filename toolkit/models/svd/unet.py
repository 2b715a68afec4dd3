"""Stable Video Diffusion's UNetSpatioTemporalConditionModel in MindSpore.

Port of diffusers' ``models/unets/unet_spatio_temporal_condition.py`` and the spatio-temporal blocks of
``models/unets/unet_3d_blocks.py`` (CrossAttnDownBlockSpatioTemporal, DownBlockSpatioTemporal,
UNetMidBlockSpatioTemporal, UpBlockSpatioTemporal, CrossAttnUpBlockSpatioTemporal). Each block is an SD-style
block whose resnets are ``SpatioTemporalResBlock`` and whose transformers are ``TransformerSpatioTemporalModel``
(``toolkit/models/svd/blocks.py``); resampling is the shared ``Downsample2D`` / ``Upsample2D``. Parameter names
and config keys are diffusers'.

``construct(sample (B, F, C_in, H, W), timestep (B,) float32, encoder_hidden_states (B, S, D),
added_time_ids (B, 3)) -> (B, F, C_out, H, W)``. ``C_in`` is twice the latent channels: the noisy latents and
the conditioning image's latents, concatenated on channels. ``added_time_ids`` are the micro-conditioning
(fps - 1, motion_bucket_id, noise_aug_strength), each embedded sinusoidally (``add_time_proj``), concatenated and
projected (``add_embedding``) and added to the timestep embedding. Frames are folded into the batch axis
inside; every frame gets the same timestep embedding and the same context (diffusers' repeat_interleave).

Resnet epsilons follow diffusers' block constructors exactly (they differ between blocks: the cross-attention
down blocks and both up block kinds use 1e-6, the plain down block and the mid block 1e-5). Sizes that are not
multiples of 2**num_upsamplers are handled as in diffusers (each upsampler resizes to its skip tensor's size).
"""
from __future__ import annotations

from mindspore import nn, ops

from toolkit.models.base import ModelMixin
from toolkit.models.layers import Conv2d, GroupNorm, TimestepEmbedding, silu
from toolkit.models.svd.blocks import SpatioTemporalResBlock, TransformerSpatioTemporalModel
from toolkit.models.unet_blocks import Downsample2D, Timesteps, Upsample2D, per_block, repeat_per_frame

DOWN_BLOCK_TYPES = ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal")
UP_BLOCK_TYPES = ("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal")


def _per_layer(value, num_layers: int) -> list:
    return [value] * num_layers if isinstance(value, int) else list(value)


def _transformer(channels: int, heads: int, layers: int, cross_attention_dim: int) -> TransformerSpatioTemporalModel:
    return TransformerSpatioTemporalModel(heads, channels // heads, in_channels=channels, num_layers=layers,
                                          cross_attention_dim=cross_attention_dim)



def _per_block(name: str, value, n: int) -> list:
    return per_block("UNetSpatioTemporalConditionModel", name, value, n)


class DownBlockSpatioTemporal(nn.Cell):
    """``num_layers`` SpatioTemporalResBlock (eps 1e-5), then an optional stride-2 conv ``downsamplers.0``.
    Returns the hidden states and the skip tensors."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int = 1,
                 add_downsample: bool = True):
        super().__init__()
        self.resnets = nn.CellList([
            SpatioTemporalResBlock(in_channels if i == 0 else out_channels, out_channels, temb_channels, eps=1e-5)
            for i in range(num_layers)])
        self.downsamplers = (nn.CellList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                       name="op")]) if add_downsample else None)

    def construct(self, hidden_states, temb, num_frames: int):
        output_states = ()
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb, num_frames)
            output_states += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class CrossAttnDownBlockSpatioTemporal(nn.Cell):
    """``num_layers`` (SpatioTemporalResBlock (eps 1e-6) -> TransformerSpatioTemporalModel) pairs, then an
    optional ``downsamplers.0``."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int = 1,
                 transformer_layers_per_block: int | tuple = 1, num_attention_heads: int = 1,
                 cross_attention_dim: int = 1280, add_downsample: bool = True):
        super().__init__()
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nn.CellList([
            SpatioTemporalResBlock(in_channels if i == 0 else out_channels, out_channels, temb_channels, eps=1e-6)
            for i in range(num_layers)])
        self.attentions = nn.CellList([
            _transformer(out_channels, num_attention_heads, layers[i], cross_attention_dim) for i in range(num_layers)])
        self.downsamplers = (nn.CellList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                       padding=1, name="op")]) if add_downsample else None)

    def construct(self, hidden_states, temb, encoder_hidden_states, num_frames: int):
        output_states = ()
        for resnet, attn in zip(self.resnets, self.attentions):
            hidden_states = resnet(hidden_states, temb, num_frames)
            hidden_states = attn(hidden_states, encoder_hidden_states, num_frames)
            output_states += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            output_states += (hidden_states,)
        return hidden_states, output_states


class UNetMidBlockSpatioTemporal(nn.Cell):
    """SpatioTemporalResBlock, then ``num_layers`` (TransformerSpatioTemporalModel -> SpatioTemporalResBlock)
    pairs; eps 1e-5."""

    def __init__(self, in_channels: int, temb_channels: int, num_layers: int = 1,
                 transformer_layers_per_block: int | tuple = 1, num_attention_heads: int = 1,
                 cross_attention_dim: int = 1280):
        super().__init__()
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nn.CellList([SpatioTemporalResBlock(in_channels, in_channels, temb_channels, eps=1e-5)
                                    for _ in range(num_layers + 1)])
        self.attentions = nn.CellList([
            _transformer(in_channels, num_attention_heads, layers[i], cross_attention_dim) for i in range(num_layers)])

    def construct(self, hidden_states, temb, encoder_hidden_states, num_frames: int):
        hidden_states = self.resnets[0](hidden_states, temb, num_frames)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            hidden_states = attn(hidden_states, encoder_hidden_states, num_frames)
            hidden_states = resnet(hidden_states, temb, num_frames)
        return hidden_states


def _up_resnets(in_channels, prev_output_channel, out_channels, temb_channels, num_layers, eps):
    resnets = []
    for i in range(num_layers):
        skip = in_channels if i == num_layers - 1 else out_channels
        previous = prev_output_channel if i == 0 else out_channels
        resnets.append(SpatioTemporalResBlock(previous + skip, out_channels, temb_channels, eps=eps))
    return nn.CellList(resnets)


class UpBlockSpatioTemporal(nn.Cell):
    """``num_layers`` SpatioTemporalResBlock, each fed the hidden states concatenated with the last remaining
    skip tensor, then an optional nearest-2x + conv ``upsamplers.0``."""

    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int,
                 resolution_idx: int | None = None, num_layers: int = 1, resnet_eps: float = 1e-6,
                 add_upsample: bool = True):
        super().__init__()
        self.resnets = _up_resnets(in_channels, prev_output_channel, out_channels, temb_channels, num_layers,
                                   resnet_eps)
        self.upsamplers = (nn.CellList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
                           if add_upsample else None)
        self.resolution_idx = resolution_idx

    def construct(self, hidden_states, res_hidden_states_tuple, temb, num_frames: int, upsample_size=None):
        n = len(res_hidden_states_tuple)
        for i, resnet in enumerate(self.resnets):
            hidden_states = ops.cat([hidden_states, res_hidden_states_tuple[n - 1 - i]], 1)
            hidden_states = resnet(hidden_states, temb, num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states


class CrossAttnUpBlockSpatioTemporal(nn.Cell):
    """UpBlockSpatioTemporal with a TransformerSpatioTemporalModel after each resnet."""

    def __init__(self, in_channels: int, out_channels: int, prev_output_channel: int, temb_channels: int,
                 resolution_idx: int | None = None, num_layers: int = 1,
                 transformer_layers_per_block: int | tuple = 1, resnet_eps: float = 1e-6,
                 num_attention_heads: int = 1, cross_attention_dim: int = 1280, add_upsample: bool = True):
        super().__init__()
        layers = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = _up_resnets(in_channels, prev_output_channel, out_channels, temb_channels, num_layers,
                                   resnet_eps)
        self.attentions = nn.CellList([
            _transformer(out_channels, num_attention_heads, layers[i], cross_attention_dim) for i in range(num_layers)])
        self.upsamplers = (nn.CellList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
                           if add_upsample else None)
        self.resolution_idx = resolution_idx

    def construct(self, hidden_states, res_hidden_states_tuple, temb, encoder_hidden_states, num_frames: int,
                  upsample_size=None):
        n = len(res_hidden_states_tuple)
        for i, (resnet, attn) in enumerate(zip(self.resnets, self.attentions)):
            hidden_states = ops.cat([hidden_states, res_hidden_states_tuple[n - 1 - i]], 1)
            hidden_states = resnet(hidden_states, temb, num_frames)
            hidden_states = attn(hidden_states, encoder_hidden_states, num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states




class UNetSpatioTemporalConditionModel(ModelMixin):
    """conv_in -> down blocks (skips kept) -> mid block -> up blocks (consuming the skips) -> conv_norm_out ->
    SiLU -> conv_out, on frames folded into the batch; ``emb`` = time_embedding(t) + add_embedding(added ids)
    goes to every resnet, the image embedding to every transformer."""

    ignored_config_keys = ("sample_size",)

    def __init__(self, sample_size: int | None = None, in_channels: int = 8, out_channels: int = 4,
                 down_block_types: tuple = ("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                                            "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                 up_block_types: tuple = ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                                          "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
                 block_out_channels: tuple = (320, 640, 1280, 1280), addition_time_embed_dim: int = 256,
                 projection_class_embeddings_input_dim: int = 768, layers_per_block: int | tuple = 2,
                 cross_attention_dim: int | tuple = 1024, transformer_layers_per_block: int | tuple = 1,
                 num_attention_heads: int | tuple = (5, 10, 20, 20), num_frames: int = 25):
        super().__init__()
        n = len(down_block_types)
        if len(up_block_types) != n or len(block_out_channels) != n:
            raise ValueError(f"UNetSpatioTemporalConditionModel: down_block_types ({n}), up_block_types "
                             f"({len(up_block_types)}) and block_out_channels ({len(block_out_channels)}) must have "
                             "the same length")
        for name, types, allowed in (("down_block_types", down_block_types, DOWN_BLOCK_TYPES),
                                     ("up_block_types", up_block_types, UP_BLOCK_TYPES)):
            bad = [t for t in types if t not in allowed]
            if bad:
                raise ValueError(f"UNetSpatioTemporalConditionModel: {name} {bad} not supported "
                                 f"(supported: {list(allowed)})")
        heads = _per_block("num_attention_heads", num_attention_heads, n)
        cross = _per_block("cross_attention_dim", cross_attention_dim, n)
        layers = _per_block("layers_per_block", layers_per_block, n)
        t_layers = [t if isinstance(t, int) else tuple(t) for t in
                    ([transformer_layers_per_block] * n if isinstance(transformer_layers_per_block, int)
                     else list(transformer_layers_per_block))]
        self.addition_time_embed_dim = addition_time_embed_dim
        self.num_frames = num_frames  # the training length (the pipeline's default), not a limit

        self.conv_in = Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        time_embed_dim = block_out_channels[0] * 4
        self.time_proj = Timesteps(block_out_channels[0], True, 0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
        self.add_time_proj = Timesteps(addition_time_embed_dim, True, 0)
        self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim)

        down, out_ch = [], block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            if kind == "CrossAttnDownBlockSpatioTemporal":
                down.append(CrossAttnDownBlockSpatioTemporal(in_ch, out_ch, time_embed_dim, layers[i], t_layers[i],
                                                             heads[i], cross[i], add_downsample=i < n - 1))
            else:
                down.append(DownBlockSpatioTemporal(in_ch, out_ch, time_embed_dim, layers[i],
                                                    add_downsample=i < n - 1))
        self.down_blocks = nn.CellList(down)
        self.mid_block = UNetMidBlockSpatioTemporal(block_out_channels[-1], time_embed_dim,
                                                    transformer_layers_per_block=t_layers[-1],
                                                    num_attention_heads=heads[-1], cross_attention_dim=cross[-1])

        rev_channels = list(reversed(block_out_channels))
        rev_heads, rev_layers, rev_cross, rev_t = heads[::-1], layers[::-1], cross[::-1], t_layers[::-1]
        up, out_ch = [], rev_channels[0]
        self.num_upsamplers = n - 1
        for i, kind in enumerate(up_block_types):
            prev, out_ch = out_ch, rev_channels[i]
            in_ch = rev_channels[min(i + 1, n - 1)]
            if kind == "CrossAttnUpBlockSpatioTemporal":
                up.append(CrossAttnUpBlockSpatioTemporal(in_ch, out_ch, prev, time_embed_dim, i, rev_layers[i] + 1,
                                                         rev_t[i], num_attention_heads=rev_heads[i],
                                                         cross_attention_dim=rev_cross[i], add_upsample=i < n - 1))
            else:
                up.append(UpBlockSpatioTemporal(in_ch, prev, out_ch, time_embed_dim, i, rev_layers[i] + 1,
                                                add_upsample=i < n - 1))
        self.up_blocks = nn.CellList(up)
        self._cross_down = tuple(k == "CrossAttnDownBlockSpatioTemporal" for k in down_block_types)
        self._cross_up = tuple(k == "CrossAttnUpBlockSpatioTemporal" for k in up_block_types)

        self.conv_norm_out = GroupNorm(32, block_out_channels[0], eps=1e-5)
        self.conv_out = Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def embed(self, timestep, added_time_ids):
        """(B, time_embed_dim): TimestepEmbedding(sinusoid(t)) + add_embedding(sinusoids of the added ids)."""
        b = added_time_ids.shape[0]
        t = ops.broadcast_to(timestep.reshape(-1), (b,))
        emb = self.time_embedding(self.time_proj(t))
        ids = self.add_time_proj(added_time_ids.reshape(-1)).reshape(b, -1)
        return emb + self.add_embedding(ids)

    def construct(self, sample, timestep, encoder_hidden_states, added_time_ids):
        b, f = sample.shape[0], sample.shape[1]
        emb = self.embed(timestep, added_time_ids)
        # every frame gets its video's embedding and context (diffusers' repeat_interleave)
        emb = repeat_per_frame(emb, f)
        context = repeat_per_frame(encoder_hidden_states, f)

        x = self.conv_in(sample.reshape((b * f,) + tuple(sample.shape[2:])))
        skips = (x,)
        for i, block in enumerate(self.down_blocks):
            if self._cross_down[i]:
                x, res = block(x, emb, context, f)
            else:
                x, res = block(x, emb, f)
            skips += res
        x = self.mid_block(x, emb, context, f)
        for i, block in enumerate(self.up_blocks):
            k = len(block.resnets)
            res, skips = skips[len(skips) - k:], skips[: len(skips) - k]
            # the upsampler resizes to the next skip's size: 2x, or what an odd size was downsampled from
            upsample_size = skips[-1].shape[2:] if i < len(self.up_blocks) - 1 else None
            if self._cross_up[i]:
                x = block(x, res, emb, context, f, upsample_size)
            else:
                x = block(x, res, emb, f, upsample_size)
        x = self.conv_out(silu(self.conv_norm_out(x)))
        return x.reshape((b, f) + tuple(x.shape[1:]))
