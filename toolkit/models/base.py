"""What every network shares: being built from its checkpoint's config.json, and being compiled."""
from __future__ import annotations

import inspect
import logging

import mindspore as ms
from mindspore import nn

log = logging.getLogger(__name__)


class ModelMixin(nn.Cell):
    """``from_config(config)`` passes the config keys the constructor names (diffusers' names) and
    reports the others; keys starting with ``_`` (``_class_name``, ``_diffusers_version``) are metadata."""

    ignored_config_keys: tuple = ()

    @classmethod
    def from_config(cls, config: dict):
        params = inspect.signature(cls.__init__).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs, unknown = {}, []
        for k, v in config.items():
            if k.startswith("_") or k in cls.ignored_config_keys:
                continue
            if k in params or accepts_any:
                kwargs[k] = v
            else:
                unknown.append(k)
        if unknown:
            log.warning("%s ignores config keys it does not know: %s", cls.__name__, sorted(unknown))
        return cls(**kwargs)


def compile_network(net: nn.Cell):
    """``mindspore.jit`` of ``net.construct``, with the operator choices that are fastest in a compiled graph
    (they differ from eager ones: GroupNorm's statistics-plus-BatchNorm route wins from 2^15 values under
    jit, but only from 2^19 eagerly). The choices are set on ``net`` itself, so its eager calls take them
    too (same numbers to ~1e-6, only the speed differs)."""
    from toolkit.models.layers import GroupNorm

    for _, cell in net.cells_and_names():
        if isinstance(cell, GroupNorm):
            cell.fused_below = GroupNorm.fused_below_compiled
    return ms.jit(net.construct)


def decoder_fits_one_graph(vae: nn.Cell, frames: int, h: int, w: int) -> bool:
    """Whether ``vae``'s decoder, given ``frames`` latents of h x w, compiles as one graph
    (``layers.fits_compiled_graph``): its widest activations are full size (``spatial_ratio`` times the latent)
    at the width its ``conv_out`` reads."""
    from toolkit.models.layers import fits_compiled_graph

    ratio = vae.spatial_ratio
    return fits_compiled_graph(frames, h * ratio, w * ratio, vae.decoder.conv_out.in_channels)
