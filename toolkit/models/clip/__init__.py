"""CLIP text and image encoders (transformers' layouts) and the pipelines' CLIP image preprocessing."""
from toolkit.models.clip.text import CLIPTextModel, CLIPTextModelWithProjection
from toolkit.models.clip.vision import CLIPVisionModelWithProjection

__all__ = ["CLIPTextModel", "CLIPTextModelWithProjection", "CLIPVisionModelWithProjection"]
