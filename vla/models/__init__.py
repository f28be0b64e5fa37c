"""Models: PI0FlowMatching, PI05FlowMatching, LlavaVLA + EagleBackbone + FlowMatchingHead, LinearProjector,
LoRA and name_mapping loading. Importing this package registers every model type with `vla.config.register`."""
import importlib

# Each family lives in its own module; importing them here fills the registry.
_FAMILY_MODULES = ("vla.models.projector", "vla.models.pi0", "vla.models.pi05", "vla.models.gr00t")

for _module in _FAMILY_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as _err:  # a family not written yet; any other missing import is a real error
        if _err.name != _module:
            raise
