"""CLIP image encoder (transformers' ``CLIPVisionModelWithProjection``): the image conditioning of Stable
Video Diffusion and I2VGen-XL (OpenCLIP ViT-H/14, ``hidden_act="gelu"``).

patch embedding + class token + positions -> ``pre_layrnorm`` (sic, transformers' name) -> transformer
(no mask) -> the class token's state through ``post_layernorm`` -> bias-free ``visual_projection`` =
``image_embeds``. Pixels are (B, num_channels, image_size, image_size), normalized as
``toolkit.models.clip.preprocess`` prepares them.

Parameter names are transformers' (``vision_model.embeddings.patch_embedding.weight``, ...); a state
dict without the ``vision_model.`` prefix (transformers 5's bare ``CLIPVisionModel``) loads too, and a
stored ``position_ids`` buffer is ignored.
"""
from __future__ import annotations

from mindspore import nn

from toolkit.models.base import ModelMixin
from toolkit.models.clip.encoder import (TRANSFORMERS_CONFIG_KEYS, CLIPEncoder, CLIPVisionEmbeddings,
                                         strip_prefix_key)
from toolkit.models.layers import LayerNorm, linear


class CLIPVisionTransformer(nn.Cell):
    """The vision tower (transformers' ``CLIPVisionModel`` body, stored as ``vision_model``)."""

    def __init__(self, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_channels,
                 image_size, patch_size, hidden_act, layer_norm_eps):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(hidden_size, image_size, patch_size, num_channels)
        self.pre_layrnorm = LayerNorm(hidden_size, layer_norm_eps)
        self.encoder = CLIPEncoder(hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                                   hidden_act, layer_norm_eps)
        self.post_layernorm = LayerNorm(hidden_size, layer_norm_eps)

    def construct(self, pixel_values):
        """-> (last_hidden_state (B, 1 + patches, D), pooler_output (B, D)), transformers' order."""
        h = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return h, self.post_layernorm(h[:, 0])


class CLIPVisionModelWithProjection(ModelMixin):
    """``construct(pixel_values) -> (image_embeds (B, projection_dim), last_hidden_state)``.

    Constructor keys and defaults are transformers' ``CLIPVisionConfig``.
    """

    ignored_config_keys = TRANSFORMERS_CONFIG_KEYS
    ignored_checkpoint_keys = (r"(vision_model\.)?embeddings\.position_ids",)
    checkpoint_key = staticmethod(strip_prefix_key("vision_model."))

    def __init__(self, hidden_size: int = 768, intermediate_size: int = 3072, projection_dim: int = 512,
                 num_hidden_layers: int = 12, num_attention_heads: int = 12, num_channels: int = 3,
                 image_size: int = 224, patch_size: int = 32, hidden_act: str = "quick_gelu",
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        self.image_size = image_size
        self.vision_model = CLIPVisionTransformer(hidden_size, intermediate_size, num_hidden_layers,
                                                  num_attention_heads, num_channels, image_size, patch_size,
                                                  hidden_act, layer_norm_eps)
        self.visual_projection = linear(hidden_size, projection_dim, bias=False)

    def construct(self, pixel_values):
        last, pooled = self.vision_model(pixel_values)
        return self.visual_projection(pooled), last
