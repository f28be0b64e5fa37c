"""Argument types shared by the sim client's commands (run, merge, record)."""
from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    """`0,3` or ranges `0-99,200` (inclusive)."""
    out: list[int] = []
    try:
        for part in (x.strip() for x in text.split(",")):
            if "-" in part.lstrip("-"):
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out += range(lo, hi + 1)
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers or ranges (0-99), got {text!r}") from None
    return out


def word_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]
