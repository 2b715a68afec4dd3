"""CLIP text encoder (transformers' ``CLIPTextModel`` / ``CLIPTextModelWithProjection``): the text encoder
of Stable Diffusion 1.x, hence of AnimateDiff, and of I2VGen-XL.

token + position embeddings -> causal pre-norm transformer -> ``final_layer_norm``. The pooled output is
the final state at the end-of-text token: for configs written before transformers PR #24773
(``eos_token_id == 2``, e.g. SD 1.5's) at the position of the largest token id (the eos token has the
largest id in CLIP's vocabulary), otherwise at the first occurrence of ``eos_token_id`` (position 0 if a
row has none, as transformers' argmax gives).

Parameter names are transformers-4's (``text_model.embeddings.token_embedding.weight``, ...), as real hub
checkpoints store them; checkpoints written by transformers 5's ``CLIPTextModel`` (no ``text_model.``
prefix) load too, and a stored ``position_ids`` buffer is ignored.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from toolkit.models.base import ModelMixin
from toolkit.models.clip.encoder import (NEG_INF, TRANSFORMERS_CONFIG_KEYS, CLIPEncoder, CLIPTextEmbeddings,
                                         causal_mask_table, select_rows, strip_prefix_key)
from toolkit.models.layers import LayerNorm, linear

IGNORED_CHECKPOINT_KEYS = (r"(text_model\.)?embeddings\.position_ids",)


class CLIPTextTransformer(nn.Cell):
    """The text tower (transformers-4's ``CLIPTextTransformer``, stored as ``text_model``)."""

    def __init__(self, vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                 max_position_embeddings, hidden_act, layer_norm_eps, eos_token_id):
        super().__init__()
        if not isinstance(eos_token_id, int):
            raise ValueError(f"eos_token_id={eos_token_id!r}: a single integer token id is required")
        self.eos_token_id = eos_token_id
        self.num_hidden_layers = num_hidden_layers
        self.embeddings = CLIPTextEmbeddings(vocab_size, hidden_size, max_position_embeddings)
        self.encoder = CLIPEncoder(hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                                   hidden_act, layer_norm_eps)
        self.final_layer_norm = LayerNorm(hidden_size, layer_norm_eps)
        self.causal = causal_mask_table(max_position_embeddings)

    def mask(self, seq_len: int, attention_mask=None):
        """(1 or B, 1, S, S) additive mask: causal, and with ``attention_mask`` (B, S; 0 = padding) the
        padded keys too. The minimum of the two keeps every value finite."""
        causal = self.causal[:seq_len, :seq_len][None, None]
        if attention_mask is None:
            return causal
        pad = (1.0 - attention_mask.astype(ms.float32))[:, None, None, :] * NEG_INF
        return ops.minimum(causal, pad)

    def pool(self, last_hidden_state, input_ids):
        """The final state at each row's end-of-text token, (B, D)."""
        s = input_ids.shape[-1]
        pos = ops.arange(s, dtype=ms.int32)[None]
        ids = input_ids.astype(ms.int32)
        # torch's argmax returns the first maximum; written here as a unique maximum, value * S - position
        # (int32: exact for vocabularies up to 2^31 / S tokens)
        if self.eos_token_id == 2:
            score = ids * s - pos
        else:
            score = (ids == self.eos_token_id).astype(ms.int32) * s - pos
        return select_rows(last_hidden_state, ops.argmax(score, -1))

    def construct(self, input_ids, attention_mask=None):
        """-> (last_hidden_state (B, S, D), pooler_output (B, D)), transformers' order."""
        h = self.embeddings(input_ids)
        h = self.encoder(h, self.mask(input_ids.shape[-1], attention_mask))
        h = self.final_layer_norm(h)
        return h, self.pool(h, input_ids)

    def hidden_states(self, input_ids, attention_mask=None) -> tuple:
        """transformers' ``hidden_states`` (``output_hidden_states=True``): the embeddings, then every
        layer's output, none of them through ``final_layer_norm``."""
        h = self.embeddings(input_ids)
        return self.encoder.all_hidden_states(h, self.mask(input_ids.shape[-1], attention_mask))

    def encode(self, input_ids, attention_mask=None, clip_skip: int | None = None):
        """The prompt embedding diffusers' pipelines use, (B, S, D).

        ``clip_skip=None``: ``last_hidden_state``. ``clip_skip=k``: ``hidden_states[-(k + 1)]`` (the output
        of layer ``num_hidden_layers - k``) through ``final_layer_norm``, as StableDiffusionPipeline /
        AnimateDiffPipeline.encode_prompt compute it; the layers after it are not run.
        """
        if clip_skip is None:
            return self(input_ids, attention_mask)[0]
        if not 0 <= clip_skip <= self.num_hidden_layers:
            raise ValueError(f"clip_skip={clip_skip}: must be between 0 and num_hidden_layers="
                             f"{self.num_hidden_layers} of the text encoder")
        h = self.embeddings(input_ids)
        h = self.encoder(h, self.mask(input_ids.shape[-1], attention_mask), self.num_hidden_layers - clip_skip)
        return self.final_layer_norm(h)


class _CLIPTextBase(ModelMixin):
    """Shared constructor (transformers' ``CLIPTextConfig`` keys and defaults; ``projection_dim`` is used
    only by the projection variant) and loading hooks."""

    ignored_checkpoint_keys = IGNORED_CHECKPOINT_KEYS
    ignored_config_keys = TRANSFORMERS_CONFIG_KEYS
    has_projection = False
    checkpoint_key = staticmethod(strip_prefix_key("text_model."))

    def __init__(self, vocab_size: int = 49408, hidden_size: int = 512, intermediate_size: int = 2048,
                 num_hidden_layers: int = 12, num_attention_heads: int = 8, max_position_embeddings: int = 77,
                 hidden_act: str = "quick_gelu", layer_norm_eps: float = 1e-5, eos_token_id: int = 49407,
                 projection_dim: int = 512, use_attention_mask: bool = False):
        super().__init__()
        # diffusers passes the tokenizer's attention mask only when the config sets use_attention_mask
        self.use_attention_mask = bool(use_attention_mask)
        self.text_model = CLIPTextTransformer(vocab_size, hidden_size, intermediate_size, num_hidden_layers,
                                              num_attention_heads, max_position_embeddings, hidden_act,
                                              layer_norm_eps, eos_token_id)
        if self.has_projection:
            self.text_projection = linear(hidden_size, projection_dim, bias=False)

    def hidden_states(self, input_ids, attention_mask=None) -> tuple:
        return self.text_model.hidden_states(input_ids, attention_mask)

    def encode(self, input_ids, attention_mask=None, clip_skip: int | None = None):
        return self.text_model.encode(input_ids, attention_mask, clip_skip)


class CLIPTextModel(_CLIPTextBase):
    """``construct(input_ids, attention_mask=None) -> (last_hidden_state, pooler_output)``.

    ``input_ids`` (B, S) integer, S <= max_position_embeddings; ``attention_mask`` (B, S) 1 = token,
    0 = padding, or None (causal mask only, as diffusers calls it). ``encode(..., clip_skip)`` gives the
    prompt embedding of diffusers' pipelines; ``hidden_states(...)`` all layers' outputs.
    """

    def construct(self, input_ids, attention_mask=None):
        return self.text_model(input_ids, attention_mask)


class CLIPTextModelWithProjection(_CLIPTextBase):
    """``construct(input_ids, attention_mask=None) -> (text_embeds (B, projection_dim), last_hidden_state)``:
    the pooled output through the bias-free ``text_projection``."""

    has_projection = True

    def construct(self, input_ids, attention_mask=None):
        last, pooled = self.text_model(input_ids, attention_mask)
        return self.text_projection(pooled), last
