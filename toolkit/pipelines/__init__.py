"""One assembly module per model family. Each exposes the same four functions, which
``toolkit.runner`` calls in this order:

- ``read_configs(folder) -> Configs``: the checkpoint's JSON files only (no weights);
- ``check_request(request: dict, configs) -> dict``: validate every key against the checkpoint and fill
  the model-card defaults; raise ``common.RequestError`` naming the key and the allowed values. Runs
  before any weights load, so every bad input fails fast;
- ``load(folder, dtype, variant, jit, **model_keys) -> model``: build the networks and load the weights;
- ``generate(model, request, rng, timer, callback, progress) -> frames (B, F, H, W, 3) float32 in [0, 1]``.

The request dict holds the top-level config keys (prompt, num_frames, ..., family-specific keys such as
fps or strength), plus ``scheduler`` (overrides, ``_class_name`` to swap the class) and ``vae_tiling``.
"""
