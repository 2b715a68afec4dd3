"""One assembly module per model family. Each exposes the same four functions, which
``toolkit.runner`` calls in this order:

- ``read_configs(folder, **extras) -> Configs``: the checkpoint's JSON files only (no weights);
- ``check_request(request: dict, configs) -> dict``: validate every key against the checkpoint and fill
  the model-card defaults; raise ``common.RequestError`` naming the key and the allowed values. Runs
  before any weights load, so every bad input fails fast;
- ``load(folder, dtype, variant, jit, **extras) -> model``: build the networks and load the weights;
- ``generate(model, request, rng, timer, callback, progress) -> frames (B, F, H, W, 3) float32 in [0, 1]``.

A family that combines several checkpoints lists the extra ``model.<key>`` entries in
``EXTRA_CHECKPOINTS`` (AnimateDiff: ``("motion_adapter",)``); the runner resolves each (local folder or
hub id) and passes the folders as keyword arguments ``extras`` to ``read_configs`` and ``load``.

The request dict holds the top-level config keys (prompt, num_frames, ..., family-specific keys such as
fps or strength), plus ``scheduler`` (overrides, ``_class_name`` to swap the class) and ``vae_tiling``.
"""
