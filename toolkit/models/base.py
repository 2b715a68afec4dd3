"""The one thing every network shares: being built from its checkpoint's config.json."""
from __future__ import annotations

import inspect
import logging

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
