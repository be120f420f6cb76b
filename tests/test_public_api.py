"""The public surface of ``bastion``: one sorted ``__all__``, nothing missing, typed signatures.

The ``assert_type`` calls are checked by mypy when the tests are type-checked; at runtime
``assert_type`` returns its argument unchanged, so they cost nothing and cannot fail.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from typing_extensions import assert_type

import bastion
from _unit_models import Document, User


def _isort_style(name: str) -> tuple[int, str]:
    """The order of ruff's RUF022 (isort style): CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return 0, name
    return (1 if name[:1].isupper() else 2), name


def test_all_is_sorted() -> None:
    assert list(bastion.__all__) == sorted(bastion.__all__, key=_isort_style)


def test_all_has_no_duplicates() -> None:
    assert len(set(bastion.__all__)) == len(bastion.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in bastion.__all__ if not hasattr(bastion, name)]
    assert missing == []


def test_nothing_public_is_missing_from_all() -> None:
    public = {
        name
        for name, value in vars(bastion).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public - set(bastion.__all__) == set()


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from bastion import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(bastion.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(bastion.__version__, str)
    assert bastion.__version__.count(".") >= 1


def test_exported_errors_are_the_tree_of_bastion_errors() -> None:
    errors = [getattr(bastion, n) for n in bastion.__all__ if n.endswith(("Error", "Argument"))]
    assert errors
    for cls in errors:
        assert issubclass(cls, bastion.BastionError)


def test_exported_objects_are_defined_in_bastion() -> None:
    # A re-export of a third-party name would make it part of our API by accident.
    for name in bastion.__all__:
        value = getattr(bastion, name)
        module = getattr(value, "__module__", None) or type(value).__module__
        assert str(module).startswith("bastion"), (name, module)


# -- typed signatures (mypy reads these; at runtime they only run the calls) ---------------


def _typed_calls(authorizer: bastion.Authorizer, user: User, doc: Document) -> None:
    assert_type(authorizer.check(user, "read", doc), bool)
    assert_type(authorizer.check(user, "read"), bool)
    assert_type(authorizer.check(user, "read", doc, ip="10.0.0.1"), bool)
    assert_type(authorizer.authorize(user, "read", doc), None)
    assert_type(authorizer.policy, bastion.Policy)
    assert_type(authorizer.session, Session)
    # filter returns what `select(...)` would: with SQLAlchemy 2.1 (TypeVarTuple) `select(Document)`
    # is `Select[Document]`, so that `session.scalars(stmt)` yields `Document`s
    by_class = authorizer.filter(user, "read", Document)
    assert_type(by_class, Select[Document])
    if TYPE_CHECKING:  # Select[str, int] is not subscriptable at runtime on SQLAlchemy 2.0
        columns = sa.select(Document.title, Document.id)
        assert_type(authorizer.filter(user, "read", columns), Select[str, int])
        assert_type(authorizer.filter(user, "read", sa.select(Document.id)), Select[int])


def _typed_policy(policy: bastion.Policy) -> None:
    assert_type(policy.permissions, tuple[Hashable, ...])
    assert_type(policy.rules(), tuple[bastion.RegisteredRule, ...])
    assert_type(
        policy.allow("read", subject=User, target=Document, when=bastion.target.is_public),
        list[bastion.RegisteredRule],
    )
    assert_type(policy.plan("read", User, Document), bastion.Plan)


def test_typed_signatures_run() -> None:
    engine = sa.create_engine("sqlite://")
    try:
        from _unit_models import Base

        Base.metadata.create_all(engine)
        with Session(engine) as session:
            policy = bastion.Policy(["read"])
            _typed_policy(policy)
            user, doc = User(id=1), Document(id=1, is_public=True)
            _typed_calls(bastion.Authorizer(policy, session), user, doc)
    finally:
        engine.dispose()


def test_import_needs_sqlalchemy_only() -> None:
    """SQLAlchemy is the only required dependency: the core imports with every extra missing
    (greenlet too: SQLAlchemy's asyncio extension needs it, and 2.1 no longer installs it)."""
    extras = [
        "greenlet",
        "flask",
        "flask_login",
        "flask_sqlalchemy",
        "fastapi",
        "starlette",
        "httpx",
        "alembic",
        "click",
        "psycopg",
        "asyncpg",
        "aiosqlite",
    ]
    modules = [
        "bastion",
        "bastion.grants",
        "bastion.roles",
        "bastion.sessions",
        "bastion.enforcement",
        "bastion.compat.balrog",
        "bastion.compat.shield",
        "bastion.testing",
    ]
    code = (
        "import sys\n"
        f"for name in {extras!r}:\n"
        "    sys.modules[name] = None  # import fails as if not installed\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
