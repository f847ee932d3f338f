"""The ``lal`` command: push, pull, flv2es, es2flv, modflv and bench as subcommands.

Each tool module has ``add_parser(subparsers)`` (which sets ``func``) and does
its work in ``run(args) -> int``.  A :class:`ToolError` is printed as one line
``lal <tool>: <message>`` with exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lal_twisted import __version__
from lal_twisted.tools import bench, es2flv, flv2es, modflv, pull, push
from lal_twisted.tools.common import ToolError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lal", description="Clients and tools for live streaming (RTMP, HTTP-FLV, FLV).")
    parser.add_argument("--version", action="version", version=f"lal {__version__}")
    sub = parser.add_subparsers(dest="tool", metavar="TOOL")
    sub.required = True
    for module in (push, pull, flv2es, es2flv, modflv, bench):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ToolError as e:
        print(f"lal {args.tool}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
