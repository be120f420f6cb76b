"""``python -m bastion demo`` (``make demo``): runs end to end and shows what it says it shows."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.__main__ import main
from bastion._demo import run_demo


def _sections(text: str) -> dict[str, str]:
    """The demo's numbered sections, by number."""
    found: dict[str, str] = {}
    number = ""
    for line in text.splitlines():
        head = line.split(".", 1)[0]
        if head.isdigit() and not line.startswith(" "):
            number = head
        if number:
            found[number] = found.get(number, "") + line + "\n"
    return found


def test_demo_walkthrough(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(str(tmp_path / "demo.sqlite"), out) == 0
    parts = _sections(out.getvalue())
    assert sorted(parts, key=int) == [str(n) for n in range(1, 9)]
    # 1. in Python: per user, one EXISTS (first check) and one load of the stored grants
    # (second check); the other 18 checks send nothing
    assert "bob  'globex budget'    read=no   edit=no" in parts["1"]
    assert "statements sent to the database: 6" in parts["1"]
    # 2. static roles
    assert "eve  role=auditor  {'reports.view': True, 'reports.export': False}" in parts["2"]
    assert "ada  role=manager  {'reports.view': True, 'reports.export': True}" in parts["2"]
    # 3. filter in SQL, index-friendly branches
    assert "['acme roadmap', \"bob's notes\", 'press release']" in parts["3"]
    assert "UNION ALL" in parts["3"]
    # 4. one SELECT EXISTS; 5. the denial and its explanation
    assert "bob doc.edit 'globex budget': False" in parts["4"]
    assert "SELECT EXISTS" in parts["4"]
    assert "NotAuthorized: <User bob> may not 'doc.edit'" in parts["5"]
    assert "no grant of doc.edit globally or in org 2" in parts["5"]
    # 6. the grant is seen at once, explained, audited, and read backwards
    assert "bob doc.edit 'globex budget': True" in parts["6"]
    assert "group globex helpers → bundle editing → permission doc.edit in org 2" in parts["6"]
    assert "grant User 2 -> group globex helpers (cover for eve)" in parts["6"]
    assert "who may edit 'globex budget': ['bob', 'eve']" in parts["6"]
    # 7. a tree through a recursive query
    assert "['acme', 'roadmaps']" in parts["7"]
    assert "WITH RECURSIVE" in parts["7"]
    # 8. a page of unloaded objects in one query
    assert "bob on 'globex budget'    ['doc.edit', 'doc.read']" in parts["8"]
    assert "statements sent to the database: 1" in parts["8"]


@pytest.mark.parametrize("name", ["demo.sqlite", "demo?.sqlite", "a#b.sqlite"])
def test_demo_recreates_its_database(tmp_path: Path, name: str) -> None:
    """(``?`` in the path was read as a URL query: the file made was another, and the second
    run met the first run's rows.)"""
    path = tmp_path / name
    first, second = io.StringIO(), io.StringIO()
    run_demo(str(path), first)
    run_demo(str(path), second)  # a second run starts from a new file, same story
    assert first.getvalue() == second.getvalue()
    assert path.exists()


def test_demo_command_line(tmp_path: Path) -> None:
    path = tmp_path / "cli.sqlite"
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "demo", "--database", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "8. A whole page" in done.stdout
    assert path.exists()


def test_main_requires_a_command() -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
