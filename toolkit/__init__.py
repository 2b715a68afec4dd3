"""MindSpore video-diffusion toolkit: pure-function building blocks and MindSpore networks.

No Hydra, OmegaConf, wandb, torch or diffusers imports live under ``toolkit/``.
"""
__version__ = "0.1.0"
