"""The README's examples run: every ```python block, in order, in one namespace.

A block followed by a line ``prints`` and a ```text block must print exactly that text
(whitespace at line ends ignored).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```(?:\s*\nprints\s*\n+```text\n(.*?)```)?", re.DOTALL)


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def test_readme_python_blocks_run_and_print_what_they_say() -> None:
    # SQLAlchemy resolves Mapped[...] annotations through sys.modules[cls.__module__].
    module = types.ModuleType("bastion_readme_example")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    blocks = [m for m in BLOCK.finditer(README.read_text()) if m.group(1) == "python"]
    assert len(blocks) >= 5
    for match in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(match.group(2), f"README.md:{match.start()}", "exec"), namespace)
        if match.group(3) is not None:
            assert _normalise(out.getvalue()) == _normalise(match.group(3))
    del sys.modules[module.__name__]
