"""The T5 encoder (transformers' ``T5EncoderModel``), as the text encoder of CogVideoX, Mochi and LTX-Video.

Architecture (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer"; v1.1 changes: gated-GELU feed-forward, no tied output head):
token embedding -> N x [pre-norm self-attention, pre-norm feed-forward], each residual -> final norm.
T5 specifics: the norm is RMS-style without bias (``T5LayerNorm``); attention scores are NOT scaled by
1/sqrt(d_kv); positions enter only as a learned per-head bias over bucketed relative distances, owned
by block 0 and shared by every block. ``feed_forward_proj`` is ``"{act}"`` (``wi``/``wo``) or
``"gated-{act}"`` (``wi_0``/``wi_1``/``wo``); ``"gated-gelu"`` means the tanh approximation (gelu_new).

Parameter names are transformers' (``shared.weight``, ``encoder.block.N.layer.0.SelfAttention.q.weight``,
...), so transformers 4 and 5 checkpoints load as they are. The encoder's ``encoder.embed_tokens`` is the
same tensor as ``shared`` in transformers; checkpoints store one or both of the two keys.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from toolkit.models.base import ModelMixin
from toolkit.models.layers import (Embedding, RMSNorm, gelu, linear, scaled_dot_product_attention, silu,
                                   swap_middle_axes)

# keys transformers writes into a T5 config.json that do not change the encoder's forward pass
TRANSFORMERS_CONFIG_KEYS = (
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    "dense_act_fn", "is_gated_act",  # derived from feed_forward_proj, exactly as T5Config does
    "dropout_rate", "classifier_dropout", "initializer_factor",
    "num_decoder_layers", "is_decoder", "is_encoder_decoder", "use_cache", "output_past",
    "tie_word_embeddings", "scale_decoder_outputs", "decoder_start_token_id",
    "pad_token_id", "eos_token_id", "bos_token_id", "n_positions", "task_specific_params",
    "gradient_checkpointing", "output_hidden_states", "output_attentions", "return_dict",
)

NEG_INF = float(np.finfo(np.float32).min)


def relu(x):
    return ops.relu(x)


def gelu_erf(x):
    return gelu(x, "none")


def gelu_tanh(x):
    return gelu(x, "tanh")


# transformers' ACT2FN names; gelu_new is the tanh approximation
ACTIVATIONS = {"relu": relu, "gelu": gelu_erf, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
               "silu": silu, "swish": silu}


def parse_feed_forward_proj(feed_forward_proj: str) -> tuple[str, bool]:
    """(activation name, gated) from a T5 ``feed_forward_proj`` such as "relu" or "gated-gelu"."""
    parts = feed_forward_proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"feed_forward_proj={feed_forward_proj!r}: expected '{{act}}' or 'gated-{{act}}'")
    act = "gelu_new" if feed_forward_proj == "gated-gelu" else parts[-1]  # transformers' legacy rule
    if act not in ACTIVATIONS:
        raise ValueError(f"feed_forward_proj={feed_forward_proj!r}: activation {act!r} is not one of "
                         f"{sorted(ACTIVATIONS)}")
    return act, len(parts) == 2


def relative_position_buckets(relative_position: np.ndarray, num_buckets: int = 32,
                              max_distance: int = 128) -> np.ndarray:
    """T5's bidirectional bucket of each relative position (key index - query index), on the host.

    Half the buckets are for positive offsets; in each half, offsets below ``num_buckets // 4`` get their
    own bucket and larger ones log-spaced buckets up to ``max_distance``, beyond which all share the last.
    float32 as in transformers' ``T5Attention._relative_position_bucket`` so boundaries agree exactly.
    """
    rp = np.asarray(relative_position, dtype=np.int64)
    half = num_buckets // 2
    n = np.abs(rp)
    max_exact = half // 2
    scaled = (np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
              / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact))
    large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return (rp > 0).astype(np.int64) * half + np.where(n < max_exact, n, large)


class T5Attention(nn.Cell):
    """Unscaled multi-head self-attention; q/k/v/o without bias. Block 0 also owns the position bias table."""

    def __init__(self, d_model: int, d_kv: int, num_heads: int, has_relative_attention_bias: bool = False,
                 num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_heads, self.d_kv = num_heads, d_kv
        inner = num_heads * d_kv
        self.q = linear(d_model, inner, bias=False)
        self.k = linear(d_model, inner, bias=False)
        self.v = linear(d_model, inner, bias=False)
        self.o = linear(inner, d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = Embedding(num_buckets, num_heads)
            # Offsets beyond +-span all fall in the last bucket of their sign, so a table over
            # [-span, span] indexed by the clipped offset is exact for any sequence length.
            self.span = max(max_distance, num_buckets)
            self.offset_bucket = Tensor(relative_position_buckets(
                np.arange(-self.span, self.span + 1), num_buckets, max_distance).astype(np.int32))

    def position_bias(self, seq_len: int):
        """(1, heads, seq_len, seq_len) additive bias from the bucketed relative positions."""
        pos = ops.arange(seq_len)
        offset = ops.clamp(pos[None, :] - pos[:, None], -self.span, self.span) + self.span
        bias_of_offset = self.relative_attention_bias(self.offset_bucket)  # (2 span + 1, heads)
        return ops.gather(bias_of_offset, offset, 0).transpose(2, 0, 1)[None]

    def construct(self, x, bias):
        b, s, _ = x.shape
        q = swap_middle_axes(self.q(x), b, s, self.num_heads)
        k = swap_middle_axes(self.k(x), b, s, self.num_heads)
        v = swap_middle_axes(self.v(x), b, s, self.num_heads)
        out = scaled_dot_product_attention(q, k, v, mask=bias, scale=1.0)
        return self.o(swap_middle_axes(out, b, self.num_heads, s).reshape(b, s, self.num_heads * self.d_kv))


class T5LayerSelfAttention(nn.Cell):
    def __init__(self, d_model, d_kv, num_heads, eps, **bias_kw):
        super().__init__()
        self.SelfAttention = T5Attention(d_model, d_kv, num_heads, **bias_kw)
        self.layer_norm = RMSNorm(d_model, eps)

    def construct(self, x, bias):
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseReluDense(nn.Cell):
    """``wo(act(wi(x)))``, or gated ``wo(act(wi_0(x)) * wi_1(x))``; transformers' name for either kind."""

    def __init__(self, d_model: int, d_ff: int, act: str, gated: bool):
        super().__init__()
        self.gated = gated
        self.act = ACTIVATIONS[act]
        if gated:
            self.wi_0 = linear(d_model, d_ff, bias=False)
            self.wi_1 = linear(d_model, d_ff, bias=False)
        else:
            self.wi = linear(d_model, d_ff, bias=False)
        self.wo = linear(d_ff, d_model, bias=False)

    def construct(self, x):
        if self.gated:
            h = self.act(self.wi_0(x)) * self.wi_1(x)
        else:
            h = self.act(self.wi(x))
        return self.wo(h)


class T5LayerFF(nn.Cell):
    def __init__(self, d_model, d_ff, act, gated, eps):
        super().__init__()
        self.DenseReluDense = T5DenseReluDense(d_model, d_ff, act, gated)
        self.layer_norm = RMSNorm(d_model, eps)

    def construct(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Cell):
    def __init__(self, d_model, d_kv, d_ff, num_heads, act, gated, eps, **bias_kw):
        super().__init__()
        self.layer = nn.CellList([T5LayerSelfAttention(d_model, d_kv, num_heads, eps, **bias_kw),
                                  T5LayerFF(d_model, d_ff, act, gated, eps)])

    def construct(self, x, bias):
        return self.layer[1](self.layer[0](x, bias))


class T5Stack(nn.Cell):
    """The encoder blocks and final norm (its token embedding lives in the parent as ``shared``)."""

    def __init__(self, d_model, d_kv, d_ff, num_layers, num_heads, act, gated, eps, num_buckets, max_distance):
        super().__init__()
        self.block = nn.CellList([
            T5Block(d_model, d_kv, d_ff, num_heads, act, gated, eps, has_relative_attention_bias=(i == 0),
                    num_buckets=num_buckets, max_distance=max_distance)
            for i in range(num_layers)])
        self.final_layer_norm = RMSNorm(d_model, eps)

    def construct(self, x, mask=None):
        bias = self.block[0].layer[0].SelfAttention.position_bias(x.shape[1])
        if mask is not None:
            # keys with mask 0 get the most negative float, like transformers' additive masks
            keep = mask.astype(ms.float32)[:, None, None, :]
            bias = bias + (1.0 - keep) * NEG_INF
        for blk in self.block:
            x = blk(x, bias)
        return self.final_layer_norm(x)


class T5EncoderModel(ModelMixin):
    """transformers' ``T5EncoderModel``: ``construct(input_ids, attention_mask=None) -> last_hidden_state``.

    ``input_ids`` (B, S) integer; ``attention_mask`` (B, S) with 1 for tokens to attend to and 0 for
    padding, or None to attend to every position (as CogVideoX and LTX-Video call it). Output (B, S,
    d_model) float32. Constructor keys and defaults are transformers' ``T5Config``.
    """

    ignored_config_keys = TRANSFORMERS_CONFIG_KEYS
    # ``encoder.embed_tokens.weight`` is ``shared.weight`` under another name; decoder / LM-head
    # entries appear when a full T5 checkpoint is read as an encoder.
    ignored_checkpoint_keys = (r"encoder\.embed_tokens\.weight", r"decoder\..*", r"lm_head\.weight")

    def __init__(self, vocab_size: int = 32128, d_model: int = 512, d_kv: int = 64, d_ff: int = 2048,
                 num_layers: int = 6, num_heads: int = 8, relative_attention_num_buckets: int = 32,
                 relative_attention_max_distance: int = 128, feed_forward_proj: str = "relu",
                 layer_norm_epsilon: float = 1e-6):
        super().__init__()
        act, gated = parse_feed_forward_proj(feed_forward_proj)
        self.shared = Embedding(vocab_size, d_model)
        self.encoder = T5Stack(d_model, d_kv, d_ff, num_layers, num_heads, act, gated, layer_norm_epsilon,
                               relative_attention_num_buckets, relative_attention_max_distance)

    @staticmethod
    def checkpoint_key(name: str, keys) -> str:
        if name == "shared.weight" and name not in keys and "encoder.embed_tokens.weight" in keys:
            return "encoder.embed_tokens.weight"
        return name

    def construct(self, input_ids, attention_mask=None):
        return self.encoder(self.shared(input_ids), attention_mask)
