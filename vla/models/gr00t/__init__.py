"""GR00T-N1.5 as FluxVLA's LIBERO config builds it: `LlavaVLA` = `EagleBackbone` (SigLIP + projector + truncated
Qwen3) + `FlowMatchingHead` (embodiment-conditioned encoders + cross-attention DiT, flow matching).
Importing this package registers the three types."""
from vla.models.gr00t.action_head import FlowMatchingHead
from vla.models.gr00t.eagle import EagleBackbone
from vla.models.gr00t.llava_vla import LlavaVLA

__all__ = ["EagleBackbone", "FlowMatchingHead", "LlavaVLA"]
