"""`python -m tests.trainer.pausing_train NAME SECONDS CONFIG WORK_DIR [vla-train args]`.

The real `vla-train`, except that sealing checkpoint NAME (its manifest and `latest`) waits
SECONDS after its weights and train-state files are on disk, and says so on stdout first:
a test SIGKILLs the process in that window to prove a half-written save is never used.
"""
from __future__ import annotations

import sys
import time

from vla import checkpoint


def pause_before_commit(name: str, seconds: float) -> None:
    original = checkpoint.commit

    def commit(work_dir, checkpoint_name, **kwargs):
        if checkpoint_name == name:
            print(f"checkpoint: test pause before commit of {name}", flush=True)
            time.sleep(seconds)
        return original(work_dir, checkpoint_name, **kwargs)

    checkpoint.commit = commit


def main(argv: list[str]) -> int:
    name, seconds, *rest = argv
    pause_before_commit(name, float(seconds))
    from trainer.cli import main as train

    return train(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
