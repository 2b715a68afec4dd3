"""What every network shares: being built from its checkpoint's config.json, and being compiled."""
from __future__ import annotations

import inspect
import logging
from typing import Callable, NamedTuple

import mindspore as ms
from mindspore import nn, ops

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


def decoder_widest_activation(vae: nn.Cell, frames: int, h: int, w: int) -> tuple:
    """(frames, height, width, channels) of ``vae``'s decoder's widest activation, given ``frames`` latents of
    h x w: full size (``spatial_ratio`` times the latent) at the width its ``conv_out`` reads."""
    ratio = vae.spatial_ratio
    return frames, h * ratio, w * ratio, vae.decoder.conv_out.in_channels


def decoder_fits_one_graph(vae: nn.Cell, frames: int, h: int, w: int) -> bool:
    """Whether ``vae``'s decoder, given ``frames`` latents of h x w, compiles as one graph
    (``layers.fits_compiled_graph`` of its widest activation)."""
    from toolkit.models.layers import fits_compiled_graph

    return fits_compiled_graph(*decoder_widest_activation(vae, frames, h, w))


class Part(NamedTuple):
    """One part of ``CompiledParts``: ``owner``'s attribute ``name`` (a list of one cell when ``listed``), run as the
    compiled ``graph``, once per batch element when ``per_frame``."""
    owner: nn.Cell
    name: str
    listed: bool
    per_frame: bool
    graph: Callable


class CompiledParts:
    """Compiled calls of a network's parts, swapped in while the network runs eagerly: for a network too large for
    one graph (a graph unrolls every convolution piece) whose parts each fit one -- SVD's temporal decoder on
    real-size chunks: its spatial layers run compiled one frame (batch element) per graph call, its temporal layers
    compiled over the whole clip, and only the glue between them (layout changes, blending) eagerly.

    ``parts``: (owner cell, attribute, listed, per_frame) for each part, ``listed`` when the attribute is a list of
    one cell, ``per_frame`` for one graph call per batch element. The graphs are made once here (compiled on first
    use per input size); ``with parts: net(...)`` shadows each attribute on its owner for the duration (the cells,
    their parameters and their names stay as they are)."""

    def __init__(self, parts):
        self.parts = []
        for owner, name, listed, frames in parts:
            cell = getattr(owner, name)
            self.parts.append(Part(owner, name, listed, frames, ms.jit((cell[0] if listed else cell).construct)))

    def __enter__(self):
        for part in self.parts:
            call = per_frame(part.graph) if part.per_frame else part.graph
            object.__setattr__(part.owner, part.name, [call] if part.listed else call)
        return self

    def __exit__(self, *exc):
        for part in self.parts:
            part.owner.__dict__.pop(part.name, None)

    def around(self, fn: Callable) -> Callable:
        """``fn`` (the eager network call) run with the compiled parts swapped in."""
        def call(*args):
            with self:
                return fn(*args)
        return call


def per_frame(graph: Callable) -> Callable:
    """``graph`` called once per batch element (frame) of its first argument, the results joined on that axis:
    one compiled graph, of one frame, serves inputs of any frame count."""
    def call(x, *args):
        outs = [graph(x[i:i + 1], *args) for i in range(x.shape[0])]
        return outs[0] if len(outs) == 1 else ops.cat(outs, 0)
    return call
