"""``python -m bastion`` / the ``bastion`` console script.

Only ``demo`` exists today; the full command-line interface (an extra, built on click) comes later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="bastion", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the example app on a SQLite file and explain it")
    demo.add_argument(
        "--database",
        default="bastion-demo.sqlite",
        help="SQLite file to (re)create (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    from bastion._demo import run_demo

    return run_demo(args.database, out=sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
