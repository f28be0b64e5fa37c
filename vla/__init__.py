"""Core library: configs, data, models, normalisation, checkpoints and the wire contract."""
__version__ = "0.1.0"
