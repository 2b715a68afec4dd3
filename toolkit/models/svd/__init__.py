"""Stable Video Diffusion: the spatio-temporal UNet and the KL autoencoder with a temporal decoder."""
from toolkit.models.svd.unet import UNetSpatioTemporalConditionModel
from toolkit.models.svd.vae import AutoencoderKLTemporalDecoder

__all__ = ["UNetSpatioTemporalConditionModel", "AutoencoderKLTemporalDecoder"]
