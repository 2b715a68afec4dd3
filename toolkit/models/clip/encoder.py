"""The transformer encoder CLIP's text and vision towers share (transformers' ``CLIPEncoder``).

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision": a pre-norm
transformer, each layer ``x + attn(layer_norm1(x))`` then ``x + mlp(layer_norm2(x))``; attention with
biased q/k/v/out projections scaled by 1/sqrt(head_dim); the MLP is ``fc2(act(fc1(x)))`` with OpenAI's
``quick_gelu`` (x * sigmoid(1.702 x)) or exact ``gelu`` (OpenCLIP ViT-H/bigG image encoders of SVD and
I2VGen-XL). Parameter names are transformers' (``layers.N.self_attn.q_proj.weight``, ``layers.N.mlp.fc1``...).

Also here: how a CLIP checkpoint's config.json and state dict map onto the towers, for both the
transformers-4 layout real hub checkpoints use and the transformers-5 one (see ``strip_prefix_key``).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from toolkit.models.layers import Conv2d, LayerNorm, gelu, linear, scaled_dot_product_attention, swap_middle_axes
from toolkit.models.layers import Embedding  # torch.nn.Embedding with its `weight` name

NEG_INF = float(np.finfo(np.float32).min)

# Keys transformers (4 and 5) writes into a CLIPTextConfig / CLIPVisionConfig config.json that do not
# change the forward pass at inference (dropout, initialisation, generation and bookkeeping settings).
TRANSFORMERS_CONFIG_KEYS = (
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "_name_or_path",
    "attention_dropout", "dropout", "initializer_range", "initializer_factor",
    "bos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "finetuning_task",
    "id2label", "label2id", "tokenizer_class", "prefix", "task_specific_params", "problem_type",
    "gradient_checkpointing", "use_cache",
)


def quick_gelu(x):
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x) (transformers' ``QuickGELUActivation``)."""
    return x * ops.sigmoid(1.702 * x)


def gelu_erf(x):
    return gelu(x, "none")


def gelu_tanh(x):
    return gelu(x, "tanh")


# transformers' ACT2FN names that CLIP checkpoints use
ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu_erf, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act={name!r}: supported {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class CLIPTextEmbeddings(nn.Cell):
    """Token embedding plus a learned absolute position embedding (positions 0..S-1)."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int):
        super().__init__()
        self.token_embedding = Embedding(vocab_size, hidden_size)
        self.position_embedding = Embedding(max_position_embeddings, hidden_size)
        self.max_position_embeddings = max_position_embeddings

    def construct(self, input_ids):
        s = input_ids.shape[-1]
        if s > self.max_position_embeddings:
            raise ValueError(f"sequence length {s} exceeds max_position_embeddings={self.max_position_embeddings}")
        return self.token_embedding(input_ids) + self.position_embedding.weight[:s][None]


class CLIPVisionEmbeddings(nn.Cell):
    """ViT patch embedding (a bias-free conv with stride = kernel = patch_size), a learned class token
    in front, plus learned absolute position embeddings (1 + (image_size / patch_size)^2 of them)."""

    def __init__(self, hidden_size: int, image_size: int, patch_size: int, num_channels: int = 3):
        super().__init__()
        for key, v in (("image_size", image_size), ("patch_size", patch_size)):
            if not isinstance(v, int):
                raise ValueError(f"{key}={v!r}: only a single int (square images and patches) is supported")
        self.image_size = image_size
        self.class_embedding = Parameter(initializer(Normal(1.0), (hidden_size,), ms.float32))
        self.patch_embedding = Conv2d(num_channels, hidden_size, patch_size, stride=patch_size, bias=False)
        self.position_embedding = Embedding((image_size // patch_size) ** 2 + 1, hidden_size)

    def construct(self, pixel_values):
        b, _, h, w = pixel_values.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(f"input image size ({h}*{w}) doesn't match the model's image_size={self.image_size}")
        patches = self.patch_embedding(pixel_values)  # (B, D, h', w')
        patches = patches.reshape(b, patches.shape[1], -1).swapaxes(1, 2)
        cls = ops.broadcast_to(self.class_embedding.reshape(1, 1, -1), (b, 1, patches.shape[-1]))
        return ops.cat([cls, patches], 1) + self.position_embedding.weight[None]


class CLIPAttention(nn.Cell):
    """Multi-head self-attention with transformers' names ``q_proj``/``k_proj``/``v_proj``/``out_proj``."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"hidden_size={embed_dim} is not divisible by num_attention_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = linear(embed_dim, embed_dim)
        self.k_proj = linear(embed_dim, embed_dim)
        self.v_proj = linear(embed_dim, embed_dim)
        self.out_proj = linear(embed_dim, embed_dim)

    def _heads(self, x):
        b, s, _ = x.shape
        return swap_middle_axes(x, b, s, self.num_heads)

    def construct(self, x, mask=None):
        b, s, d = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        o = scaled_dot_product_attention(q, k, v, mask, self.scale)
        return self.out_proj(swap_middle_axes(o, b, self.num_heads, s).reshape(b, s, d))


class CLIPMLP(nn.Cell):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.act = activation(hidden_act)
        self.fc1 = linear(hidden_size, intermediate_size)
        self.fc2 = linear(intermediate_size, hidden_size)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Cell):
    def __init__(self, hidden_size: int, intermediate_size: int, num_heads: int, hidden_act: str, eps: float):
        super().__init__()
        self.self_attn = CLIPAttention(hidden_size, num_heads)
        self.layer_norm1 = LayerNorm(hidden_size, eps)
        self.mlp = CLIPMLP(hidden_size, intermediate_size, hidden_act)
        self.layer_norm2 = LayerNorm(hidden_size, eps)

    def construct(self, x, mask=None):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Cell):
    """``num_hidden_layers`` encoder layers. ``construct(x, mask, num_layers)`` runs the first
    ``num_layers`` (all by default): the output is then transformers' ``hidden_states[num_layers]``
    (``hidden_states[0]`` being the embeddings)."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_hidden_layers: int, num_heads: int,
                 hidden_act: str, eps: float):
        super().__init__()
        self.layers = nn.CellList([CLIPEncoderLayer(hidden_size, intermediate_size, num_heads, hidden_act, eps)
                                   for _ in range(num_hidden_layers)])

    def construct(self, x, mask=None, num_layers: int | None = None):
        n = len(self.layers) if num_layers is None else num_layers
        for i in range(n):
            x = self.layers[i](x, mask)
        return x

    def all_hidden_states(self, x, mask=None) -> tuple:
        """transformers' ``hidden_states``: the input, then every layer's output (num_layers + 1 tensors)."""
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            states.append(x)
        return tuple(states)


def causal_mask_table(size: int) -> Tensor:
    """(size, size) additive mask: 0 where key <= query, the most negative float32 above the diagonal."""
    return Tensor(np.triu(np.full((size, size), NEG_INF, np.float32), 1))


def strip_prefix_key(prefix: str):
    """A ``checkpoint_key`` hook for a tower stored under ``prefix`` ("text_model."): the parameter's
    own name when the checkpoint has it (transformers 4, and transformers 5's ``*WithProjection``),
    else the name without the prefix (transformers 5's ``CLIPTextModel`` / ``CLIPVisionModel``)."""

    def checkpoint_key(name: str, keys) -> str:
        if name not in keys and name.startswith(prefix) and name[len(prefix):] in keys:
            return name[len(prefix):]
        return name

    return checkpoint_key


def select_rows(x, index):
    """x[arange(B), index] for x (B, S, D) and index (B,) integer -> (B, D)."""
    b, s, d = x.shape
    flat = index.astype(ms.int32) + ops.arange(b, dtype=ms.int32) * s
    return ops.gather(x.reshape(b * s, d), flat, 0)
