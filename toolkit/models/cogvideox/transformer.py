"""CogVideoX transformer (CogVideoX 1.0 2b/5b, 5b-I2V, 1.5 T2V/I2V) in MindSpore.

Port of diffusers' ``models/transformers/cogvideox_transformer_3d.py`` (``CogVideoXTransformer3DModel``,
``CogVideoXBlock``) with the pieces it uses (``CogVideoXPatchEmbed``, ``CogVideoXLayerNormZero``,
``AdaLayerNorm(chunk_dim=1)``, ``CogVideoXAttnProcessor2_0``). Parameter names equal the diffusers
checkpoint keys. Text and video tokens are processed as one sequence ([text | video]) by full
attention; each block modulates the two parts with separate adaLN-zero shifts/scales/gates.

Layout: the network takes and returns latents as (B, F, C, H, W), diffusers' CogVideoX layout
(the pipeline permutes to/from the toolkit's (B, C, F, H, W) at its boundary).

Positional information is one of
* 2b: a 3-D sin-cos table added after the patch embedding (built on the host, per latent size);
* 5b / 1.5: 3-D rotary embedding on the video queries/keys; the tables are computed once per latent
  size on the host (``rotary_tables_for``) and passed to ``construct``;
* 5b-I2V: additionally a learned table ``patch_embed.pos_embedding`` (1, text + video tokens, D).
"""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from toolkit.models.base import ModelMixin
from toolkit.models.embeddings import (apply_rotary, cogvideox_rotary_table, cogvideox_sincos_table,
                                       pair_rotation)
from toolkit.models.layers import (Attention, Conv2d, FeedForward, LayerNorm, TimestepEmbedding, linear,
                                   scaled_dot_product_attention, silu, sinusoidal_timestep_embedding)


def rotary_tables_for(config: dict, num_latent_frames: int, latent_height: int, latent_width: int):
    """(cos, sin) float32 Tensors (tokens, attention_head_dim) for a latent of this size, or (None, None)
    when the config does not use rotary embeddings. Compute once per shape and pass to every step."""
    if not config.get("use_rotary_positional_embeddings", False):
        return None, None
    cos, sin = cogvideox_rotary_table(
        config["attention_head_dim"], num_latent_frames, latent_height, latent_width,
        patch_size=config.get("patch_size", 2), sample_height=config.get("sample_height", 60),
        sample_width=config.get("sample_width", 90), patch_size_t=config.get("patch_size_t"))
    return Tensor(cos), Tensor(sin)


class AdaLayerNormZero(nn.Cell):
    """CogVideoX's adaLN-zero for a [text | video] pair (diffusers ``CogVideoXLayerNormZero``):
    one linear on silu(temb) gives shift/scale/gate for the video and for the text tokens."""

    def __init__(self, conditioning_dim: int, embedding_dim: int, elementwise_affine: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        self.linear = linear(conditioning_dim, 6 * embedding_dim)
        self.norm = LayerNorm(embedding_dim, eps, elementwise_affine)

    def construct(self, x, context, temb):
        shift, scale, gate, c_shift, c_scale, c_gate = ops.chunk(self.linear(silu(temb))[:, None, :], 6, -1)
        x = self.norm.modulate(x, scale, shift)
        context = self.norm.modulate(context, c_scale, c_shift)
        return x, context, gate, c_gate


class AdaLayerNormOut(nn.Cell):
    """Final adaptive LayerNorm (diffusers ``AdaLayerNorm(chunk_dim=1)``): shift first, then scale."""

    def __init__(self, conditioning_dim: int, embedding_dim: int, elementwise_affine: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        self.linear = linear(conditioning_dim, 2 * embedding_dim)
        self.norm = LayerNorm(embedding_dim, eps, elementwise_affine)

    def construct(self, x, temb):
        shift, scale = ops.chunk(self.linear(silu(temb))[:, None, :], 2, -1)
        return self.norm.modulate(x, scale, shift)


class CogVideoXBlock(nn.Cell):
    """adaLN-zero -> joint attention (rotary on video q/k) -> gated residual; adaLN-zero -> joint
    feed-forward -> gated residual. Text and video tokens share the attention and the MLP weights."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, time_embed_dim: int,
                 activation_fn: str = "gelu-approximate", attention_bias: bool = False, qk_norm: bool = True,
                 norm_elementwise_affine: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = AdaLayerNormZero(time_embed_dim, dim, norm_elementwise_affine, norm_eps)
        self.attn1 = Attention(dim, heads=num_attention_heads, dim_head=attention_head_dim, bias=attention_bias,
                               out_bias=True, qk_norm="layer_norm" if qk_norm else None, eps=1e-6)
        self.norm2 = AdaLayerNormZero(time_embed_dim, dim, norm_elementwise_affine, norm_eps)
        self.ff = FeedForward(dim, activation_fn=activation_fn)
        self.rotation = pair_rotation(attention_head_dim)  # constant, not in the checkpoint

    def attention(self, x, context, rotary_cos=None, rotary_sin=None):
        n_text = context.shape[1]
        q, k, v = self.attn1.project_qkv(ops.cat([context, x], 1))
        if rotary_cos is not None:  # text tokens are not rotated: identity rows in front of the tables
            d = rotary_cos.shape[-1]
            cos = ops.cat([ops.ones((n_text, d), rotary_cos.dtype), rotary_cos], 0)
            sin = ops.cat([ops.zeros((n_text, d), rotary_sin.dtype), rotary_sin], 0)
            q = apply_rotary(q, cos, sin, self.rotation)
            k = apply_rotary(k, cos, sin, self.rotation)
        out = self.attn1.project_out(scaled_dot_product_attention(q, k, v))
        return out[:, n_text:], out[:, :n_text]

    def construct(self, hidden_states, encoder_hidden_states, temb, rotary_cos=None, rotary_sin=None):
        """(B, N, D) video tokens, (B, S, D) text tokens, (B, time_embed_dim) -> updated (video, text)."""
        n_text = encoder_hidden_states.shape[1]
        x, c, gate, c_gate = self.norm1(hidden_states, encoder_hidden_states, temb)
        attn_x, attn_c = self.attention(x, c, rotary_cos, rotary_sin)
        hidden_states = hidden_states + gate * attn_x
        encoder_hidden_states = encoder_hidden_states + c_gate * attn_c

        x, c, gate, c_gate = self.norm2(hidden_states, encoder_hidden_states, temb)
        ff = self.ff(ops.cat([c, x], 1))
        hidden_states = hidden_states + gate * ff[:, n_text:]
        encoder_hidden_states = encoder_hidden_states + c_gate * ff[:, :n_text]
        return hidden_states, encoder_hidden_states


class PatchEmbed(nn.Cell):
    """Video latents -> tokens (``proj``: a p x p stride-p Conv2d per frame for 1.0, a linear on
    p_t x p x p patches for 1.5), text embeddings -> tokens (``text_proj``); returns [text | video]
    with the absolute positional table added when the model uses one.

    ``pos_embedding`` is a checkpoint parameter only for learned embeddings (5b-I2V); the sin-cos
    table (2b) is a constant built for the config's sample size and rebuilt on the host for others.
    """

    def __init__(self, patch_size, patch_size_t, in_channels, embed_dim, text_embed_dim, bias, sample_width,
                 sample_height, sample_frames, temporal_compression_ratio, max_text_seq_length,
                 spatial_interpolation_scale, temporal_interpolation_scale, use_positional_embeddings,
                 use_learned_positional_embeddings):
        super().__init__()
        self.patch_size, self.patch_size_t, self.embed_dim = patch_size, patch_size_t, embed_dim
        self.temporal_compression_ratio = temporal_compression_ratio
        self.scales = (spatial_interpolation_scale, temporal_interpolation_scale)
        self.sample_latent = ((sample_frames - 1) // temporal_compression_ratio + 1, sample_height, sample_width)
        self.use_sincos = use_positional_embeddings
        self.use_learned = use_learned_positional_embeddings
        if patch_size_t is None:
            self.proj = Conv2d(in_channels, embed_dim, patch_size, stride=patch_size, bias=bias)
        else:  # diffusers' 1.5 linear always has a bias (its patch_bias flag only reaches the Conv2d)
            self.proj = linear(in_channels * patch_size * patch_size * patch_size_t, embed_dim)
        self.text_proj = linear(text_embed_dim, embed_dim)
        if use_learned_positional_embeddings:
            n = max_text_seq_length + self._num_patches(*self.sample_latent)
            self.pos_embedding = Parameter(Tensor(np.zeros((1, n, embed_dim), np.float32)), requires_grad=False)
        elif use_positional_embeddings:
            self.pos_embedding = Tensor(self.sincos_table(*self.sample_latent))  # constant, not in the checkpoint

    def _num_patches(self, frames, height, width):
        return frames * (height // self.patch_size) * (width // self.patch_size)

    def sincos_table(self, frames, height, width):
        """Video-token sin-cos table (F*H/p*W/p, D) float32 for latent frames/height/width (host, cached).

        Like diffusers, temporal positions count latent frames (not temporal patches)."""
        return cogvideox_sincos_table(self.embed_dim, frames, height, width, self.patch_size, *self.scales)

    def patchify(self, x):
        b, f, c, h, w = x.shape
        p = self.patch_size
        if self.patch_size_t is None:
            y = self.proj(x.reshape(b * f, c, h, w))  # (B*F, D, H/p, W/p)
            return y.reshape(b, f, self.embed_dim, -1).swapaxes(2, 3).reshape(b, -1, self.embed_dim)
        pt = self.patch_size_t
        y = x.transpose(0, 1, 3, 4, 2).reshape(b * (f // pt), pt, h // p, p, w // p, p, c)
        y = y.transpose(0, 2, 4, 6, 1, 3, 5).reshape(b, (f // pt) * (h // p) * (w // p), c * pt * p * p)
        return self.proj(y)

    def construct(self, text_embeds, latents):
        _, f, _, h, w = latents.shape
        text = self.text_proj(text_embeds)
        video = self.patchify(latents)
        same_size = (f, h, w) == self.sample_latent
        if self.use_learned and same_size:
            return ops.cat([text, video], 1) + self.pos_embedding
        if self.use_learned and (h, w) != self.sample_latent[1:]:
            raise ValueError(f"learned positional embeddings are for {self.sample_latent[1:]} latents, got {(h, w)}")
        if self.use_sincos or self.use_learned:  # learned at another frame count: diffusers falls back to sin-cos
            table = self.pos_embedding if (self.use_sincos and same_size) else Tensor(self.sincos_table(f, h, w))
            video = video + table
        return ops.cat([text, video], 1)


class CogVideoXTransformer3DModel(ModelMixin):
    """Noise-prediction transformer; constructor keys are diffusers' config.json keys and defaults."""

    ignored_config_keys = ("dropout",)  # inference only: dropout layers are identities

    def __init__(self, num_attention_heads: int = 30, attention_head_dim: int = 64, in_channels: int = 16,
                 out_channels: int | None = 16, flip_sin_to_cos: bool = True, freq_shift: int = 0,
                 time_embed_dim: int = 512, ofs_embed_dim: int | None = None, text_embed_dim: int = 4096,
                 num_layers: int = 30, attention_bias: bool = True, sample_width: int = 90,
                 sample_height: int = 60, sample_frames: int = 49, patch_size: int = 2,
                 patch_size_t: int | None = None, temporal_compression_ratio: int = 4,
                 max_text_seq_length: int = 226, activation_fn: str = "gelu-approximate",
                 timestep_activation_fn: str = "silu", norm_elementwise_affine: bool = True,
                 norm_eps: float = 1e-5, spatial_interpolation_scale: float = 1.875,
                 temporal_interpolation_scale: float = 1.0, use_rotary_positional_embeddings: bool = False,
                 use_learned_positional_embeddings: bool = False, patch_bias: bool = True):
        super().__init__()
        if use_learned_positional_embeddings and not use_rotary_positional_embeddings:
            raise ValueError("learned positional embeddings without rotary embeddings: no CogVideoX checkpoint "
                             "has this combination (diffusers refuses it too)")
        inner_dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels
        self.inner_dim, self.out_channels = inner_dim, out_channels
        self.patch_size, self.patch_size_t = patch_size, patch_size_t
        self.flip_sin_to_cos, self.freq_shift = flip_sin_to_cos, freq_shift
        self.use_rotary = use_rotary_positional_embeddings

        self.patch_embed = PatchEmbed(
            patch_size, patch_size_t, in_channels, inner_dim, text_embed_dim, patch_bias, sample_width,
            sample_height, sample_frames, temporal_compression_ratio, max_text_seq_length,
            spatial_interpolation_scale, temporal_interpolation_scale,
            use_positional_embeddings=not use_rotary_positional_embeddings,
            use_learned_positional_embeddings=use_learned_positional_embeddings)
        self.time_embedding = TimestepEmbedding(inner_dim, time_embed_dim, timestep_activation_fn)
        self.ofs_embed_dim = ofs_embed_dim
        if ofs_embed_dim:  # CogVideoX 1.5 I2V: an embedding of the "ofs" scalar added to the time embedding
            self.ofs_embedding = TimestepEmbedding(ofs_embed_dim, ofs_embed_dim, timestep_activation_fn)
        self.transformer_blocks = nn.CellList([
            CogVideoXBlock(inner_dim, num_attention_heads, attention_head_dim, time_embed_dim, activation_fn,
                           attention_bias, True, norm_elementwise_affine, norm_eps)
            for _ in range(num_layers)])
        self.norm_final = LayerNorm(inner_dim, norm_eps, norm_elementwise_affine)
        self.norm_out = AdaLayerNormOut(time_embed_dim, inner_dim, norm_elementwise_affine, norm_eps)
        patch_volume = patch_size * patch_size * (patch_size_t or 1)
        self.proj_out = linear(inner_dim, patch_volume * out_channels)

    def unpatchify(self, x, b, f, h, w):
        """(B, tokens, patch_volume * C_out) -> (B, F, C_out, H, W)."""
        p, c = self.patch_size, self.out_channels
        if self.patch_size_t is None:
            y = x.reshape(b * f, h // p, w // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
            return y.reshape(b, f, c, h, w)
        pt = self.patch_size_t
        y = x.reshape(b * (f // pt), h // p, w // p, c, pt, p, p).transpose(0, 4, 3, 1, 5, 2, 6)
        return y.reshape(b, f, c, h, w)

    def construct(self, hidden_states, encoder_hidden_states, timestep, rotary_cos=None, rotary_sin=None,
                  ofs=None):
        """Latents (B, F, C, H, W), text embeddings (B, S, text_embed_dim), timestep (B,) float32;
        rotary tables from ``rotary_tables_for`` (rotary models); ``ofs`` (B,) or (1,) for models with
        ``ofs_embed_dim`` (the 1.5 I2V pipeline passes 2.0). Returns (B, F, C_out, H, W)."""
        b, f, _, h, w = hidden_states.shape
        if self.use_rotary and rotary_cos is None:
            raise ValueError("this CogVideoX model uses rotary embeddings: pass rotary_cos/rotary_sin "
                             "(rotary_tables_for(config, frames, height, width))")
        if self.patch_size_t is not None and f % self.patch_size_t:
            raise ValueError(f"latent frames {f} must be a multiple of patch_size_t={self.patch_size_t}")
        t_emb = sinusoidal_timestep_embedding(timestep, self.inner_dim, self.flip_sin_to_cos, self.freq_shift)
        emb = self.time_embedding(t_emb)
        if self.ofs_embed_dim:
            if ofs is None:
                raise ValueError("this CogVideoX model has an ofs embedding: pass ofs (the I2V pipeline uses 2.0)")
            ofs_emb = sinusoidal_timestep_embedding(ofs, self.ofs_embed_dim, self.flip_sin_to_cos, self.freq_shift)
            emb = emb + self.ofs_embedding(ofs_emb)

        tokens = self.patch_embed(encoder_hidden_states, hidden_states)
        n_text = encoder_hidden_states.shape[1]
        context, x = tokens[:, :n_text], tokens[:, n_text:]
        for block in self.transformer_blocks:
            x, context = block(x, context, emb, rotary_cos, rotary_sin)

        x = self.norm_out(self.norm_final(x), emb)
        return self.unpatchify(self.proj_out(x), b, f, h, w)
