"""bastion.errors: the tree drawn in the docstring is the real hierarchy; errors carry context."""

from __future__ import annotations

import builtins
import copy
import importlib
import pickle
import re
from collections.abc import Callable

import pytest

import bastion
from bastion import errors
from bastion.errors import (
    BastionError,
    DuplicateName,
    DuplicateRule,
    InvalidArgument,
    InvalidName,
    MissingContext,
    NotAuthorized,
    PermissionNotFound,
    PolicyError,
    RoleNotFound,
    RuleNotTranslatable,
    UnknownAttribute,
    UnmappedClass,
    UnusedPermission,
)

_LINE = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<name>[A-Z]\w+)(?P<note>.*)$")


def _drawn_tree() -> list[tuple[str, str | None, str]]:
    """(class name, parent name, note) for every line of the tree in the module docstring."""
    doc = errors.__doc__ or ""
    block = doc.split("::", 1)[1]
    lines = [line[4:] for line in block.splitlines() if line.startswith("    ")]
    rows: list[tuple[str, str | None, str]] = []
    stack: list[str] = []
    for line in lines:
        match = _LINE.match(line)
        assert match is not None, f"unparseable tree line: {line!r}"
        depth = len(match["indent"]) // 4
        del stack[depth:]
        rows.append((match["name"], stack[-1] if stack else None, match["note"]))
        stack.append(match["name"])
    return rows


def test_the_docstring_draws_a_tree() -> None:
    rows = _drawn_tree()
    assert rows[0] == ("BastionError", None, "")
    assert len(rows) == len(errors.__all__)


@pytest.mark.parametrize(
    "path",
    [
        "bastion.enforcement.UnauthorizedLoad",
        "bastion.grants.store.GrantConflict",
        "bastion.integrations.flask.ConfigurationError",
        "bastion.compat.keg_bouncer.model.entities.NotBound",
    ],
)
def test_errors_defined_elsewhere_are_in_the_tree_and_named(path: str) -> None:
    module, name = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert cls.__bases__[0] is errors.BastionError
    assert f"``{name}``" in (errors.__doc__ or "") or f".{name}``" in (errors.__doc__ or "")


def test_the_drawn_tree_names_every_error_once() -> None:
    names = [name for name, _, _ in _drawn_tree()]
    assert sorted(names) == sorted(errors.__all__)


@pytest.mark.parametrize(("name", "parent"), [(n, p) for n, p, _ in _drawn_tree()[1:]])
def test_drawn_parent_is_the_real_first_base(name: str, parent: str) -> None:
    cls = getattr(errors, name)
    # the first base is the bastion parent; any further base is a builtin ("also a ...")
    assert cls.__bases__[0] is getattr(errors, parent)
    for base in cls.__bases__[1:]:
        assert base.__module__ == "builtins"


@pytest.mark.parametrize(("name", "note"), [(n, note) for n, _, note in _drawn_tree()])
def test_builtin_bases_as_drawn(name: str, note: str) -> None:
    cls = getattr(errors, name)
    # builtin exception classes the note mentions ("a LookupError", "also a TypeError")
    drawn = {n for n in re.findall(r"\b([A-Z]\w*Error)\b", note) if hasattr(builtins, n)}
    real = {b.__name__ for b in cls.__mro__ if b.__module__ == "builtins"} - {
        "Exception",
        "BaseException",
        "object",
    }
    # MissingContext is a KeyError by its own base and a TypeError through InvalidArgument
    assert drawn <= real
    for builtin_name in drawn:
        assert issubclass(cls, getattr(builtins, builtin_name))


def test_every_error_is_exported_and_rooted() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, BastionError)
        assert getattr(bastion, name) is cls


def test_root_is_an_exception_not_a_base_exception_only() -> None:
    assert BastionError.__bases__ == (Exception,)


# -- context attributes and messages ---------------------------------------------------------


def test_permission_not_found() -> None:
    err = PermissionNotFound("doc.raed", ("doc.read", "doc.edit"))
    assert err.permission == "doc.raed"
    assert err.known == ("doc.read", "doc.edit")
    assert isinstance(err, LookupError)
    assert str(err) == "unknown permission 'doc.raed'; declared: 'doc.read', 'doc.edit'"


def test_permission_not_found_without_known_and_with_many() -> None:
    assert str(PermissionNotFound("x")) == "unknown permission 'x'"
    many = PermissionNotFound("x", tuple(f"p{i}" for i in range(50)))
    assert "'p9'" in str(many)
    assert "'p10'" not in str(many)  # the hint is bounded


def test_invalid_name() -> None:
    err = InvalidName("permission", "a;b", "no semicolons")
    assert (err.kind, err.name, err.reason) == ("permission", "a;b", "no semicolons")
    assert isinstance(err, ValueError)
    assert str(err) == "invalid permission name 'a;b': no semicolons"


def test_invalid_name_message_escapes_control_characters() -> None:
    err = InvalidName("permission", "a\nb\x00", "bad")
    assert "\n" not in str(err)
    assert "\\n" in str(err)


def test_role_not_found() -> None:
    err = RoleNotFound("admn", ("admin", "user"))
    assert (err.role, err.known) == ("admn", ("admin", "user"))
    assert isinstance(err, LookupError)
    assert str(err) == "unknown role 'admn'; roles: 'admin', 'user'"


def test_duplicate_name() -> None:
    err = DuplicateName("role", "admin", "is declared twice")
    assert (err.kind, err.name) == ("role", "admin")
    assert "'admin'" in str(err)
    assert "is declared twice" in str(err)


def test_unused_permission() -> None:
    err = UnusedPermission(["doc.read", "doc.edit"])
    assert err.permissions == ["doc.read", "doc.edit"]
    assert str(err) == "no role holds 'doc.read', 'doc.edit'"


def test_duplicate_rule() -> None:
    err = DuplicateRule(("read", int, None), "owner")
    assert err.key == ("read", int, None)
    assert err.name == "owner"
    assert "'owner'" in str(err)
    assert "replace=True" in str(err)


def test_unmapped_class() -> None:
    err = UnmappedClass(int)
    assert err.cls is int
    assert isinstance(err, TypeError)
    assert "int" in str(err)
    assert "not a class mapped by SQLAlchemy" in str(err)


def test_unknown_attribute() -> None:
    err = UnknownAttribute(int, "colour", "is a relationship")
    assert (err.cls, err.attribute, err.reason) == (int, "colour", "is a relationship")
    assert isinstance(err, AttributeError)
    assert str(err) == "int.colour: is a relationship"
    assert str(UnknownAttribute(int, "colour")) == "int.colour: no such attribute"


def test_rule_not_translatable() -> None:
    err = RuleNotTranslatable("target.x", "why not")
    assert (err.rule, err.reason) == ("target.x", "why not")
    assert str(err) == "rule target.x cannot be compiled both ways: why not"


def test_invalid_argument_is_a_type_error() -> None:
    err = InvalidArgument("filter() takes a Select")
    assert isinstance(err, TypeError)
    assert str(err) == "filter() takes a Select"


def test_missing_context_message_is_not_quoted_like_a_key_error() -> None:
    err = MissingContext("ip")
    assert err.name == "ip"
    assert isinstance(err, KeyError)
    assert isinstance(err, InvalidArgument)
    assert str(err) == "the rule needs the context value 'ip': pass ip=... to the call"


def test_not_authorized() -> None:
    err = NotAuthorized("alice", "doc.edit", "doc 7")
    assert (err.subject, err.permission, err.target) == ("alice", "doc.edit", "doc 7")
    assert str(err) == "'alice' may not 'doc.edit' on 'doc 7'"
    assert str(NotAuthorized("alice", "reports.view")) == "'alice' may not 'reports.view'"
    assert NotAuthorized("alice", "x").target is None


def test_not_authorized_is_not_a_policy_error() -> None:
    # a denial is an answer, not a misconfiguration: `except PolicyError` must not swallow it
    assert not issubclass(NotAuthorized, PolicyError)
    assert not issubclass(NotAuthorized, InvalidArgument)


# -- errors cross process boundaries (multiprocessing, task queues) and copy intact ----------

_EXAMPLES = [
    PermissionNotFound("x", ("a", "b")),
    InvalidName("permission", "a b", "no spaces"),
    RoleNotFound("r", ("a",)),
    DuplicateName("role", "r", "twice"),
    UnusedPermission(["p"]),
    DuplicateRule(("x", int, None), "r"),
    UnmappedClass(int),
    UnknownAttribute(int, "foo", "why"),
    RuleNotTranslatable("target.x", "why"),
    InvalidArgument("message"),
    MissingContext("ip"),
    NotAuthorized("alice", "read", "doc"),
]


def test_every_error_has_an_example() -> None:
    # a new error class must be added to _EXAMPLES, so that the round trip below covers it
    concrete = set(errors.__all__) - {"BastionError", "PolicyError"}
    assert {type(e).__name__ for e in _EXAMPLES} == concrete


def _round_trip_problem(err: BastionError, clone_of: Callable[[BastionError], object]) -> str:
    try:
        clone = clone_of(err)
    except (TypeError, AttributeError, pickle.PickleError) as exc:
        return f"{type(err).__name__}: {type(exc).__name__}: {exc}"
    if type(clone) is not type(err) or str(clone) != str(err) or vars(clone) != vars(err):
        return f"{type(err).__name__}: {clone!r} != {err!r}"
    return ""


def test_errors_survive_pickling_and_copy() -> None:
    # One test for the whole tree: the fix (a __reduce__ on the classes with their own
    # __init__) is one change, and one failure says so.
    problems = [
        problem
        for err in _EXAMPLES
        for clone_of in (lambda e: pickle.loads(pickle.dumps(e)), copy.copy)
        if (problem := _round_trip_problem(err, clone_of))
    ]
    assert problems == []
