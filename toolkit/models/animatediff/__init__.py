"""AnimateDiff: motion modules (MotionAdapter checkpoints) interleaved with a Stable Diffusion 1.5 UNet."""
from toolkit.models.animatediff.motion import AnimateDiffTransformer3D, MotionAdapter
from toolkit.models.animatediff.unet_motion import (AdapterMismatch, UNetMotionModel, adapter_layout_mismatches,
                                                    load_motion_unet, motion_unet_config)

__all__ = ["AnimateDiffTransformer3D", "MotionAdapter", "UNetMotionModel", "AdapterMismatch",
           "adapter_layout_mismatches", "load_motion_unet", "motion_unet_config"]
