# On PYTHONPATH in tests/sim: makes `import torch` fail in a process and in every process it spawns.
raise ImportError("torch is blocked in this test: sim_client must run without it")
