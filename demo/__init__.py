"""`make demo`: record a LIBERO dataset, train a tiny model, serve it and evaluate it (`python -m demo`).

The one package that depends on every other: it drives `sim_client` (recording, evaluation),
`trainer` and `policy_server` through `scripts/train.sh` and `scripts/eval.sh`. Nothing imports it.
"""
