"""Core library: configs, data, models, normalisation, checkpoints, the wire contract, file I/O, LIBERO
observation facts and the error base. It imports no process package (docs/ARCHITECTURE.md, Packages)."""
__version__ = "0.1.0"
