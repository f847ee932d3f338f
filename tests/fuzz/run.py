"""Run one fuzz target under atheris: ``python tests/fuzz/run.py TARGET [libFuzzer args]``.

The project's modules are imported under atheris' instrumentation so the
fuzzer sees their coverage.  The parser's own errors (``ALLOWED``) end an
input quietly; anything else is reported as a crash, with the input saved.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

with atheris.instrument_imports(include=["lal_twisted"]):
    from fuzz.targets import ALLOWED, TARGETS


def main() -> None:
    name = sys.argv[1]
    target, allowed = TARGETS[name], ALLOWED[name]

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except allowed:
            pass

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
