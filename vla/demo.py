"""`make demo`: the end-to-end job on an embedded default. Grows as the pieces land."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    print("demo: the end-to-end path is not assembled yet; `make test` exercises what exists.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
