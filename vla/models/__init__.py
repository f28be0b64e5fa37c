"""Models: PI0FlowMatching, PI05FlowMatching, LlavaVLA + EagleBackbone + FlowMatchingHead, LinearProjector,
LoRA and name_mapping loading. Importing this package registers every model type with `vla.config.register`."""
from vla.models import gr00t, pi0, pi05, projector  # noqa: F401  (each family registers its types on import)
