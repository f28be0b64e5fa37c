"""Command line entry point; replaced when its issue lands."""
import sys


def main(argv=None) -> int:
    print("policy_server: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
