"""Trainer: `DDPTrainRunner`, `FSDPTrainRunner` (FSDP2), `VLAMetric`, schedulers and the `vla-train` CLI.

Importing `trainer.runners` registers the runner and metric types with `vla.config.register`.
"""
