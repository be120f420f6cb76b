"""A brute-force oracle for bastion rules, written without bastion's compilers.

It evaluates a rule tree (bastion's node objects, read as plain data) over plain dicts of the
generated rows: no ORM objects, no SQL, no import of ``bastion.rules.to_python``/``to_sql``. Its
truth values are SQL's three-valued logic, spelled out below from the semantics documented in
``bastion.rules.nodes``:

* ``Compare``: UNKNOWN when either side is NULL, else the comparison of the two values;
* ``In``: FALSE for an empty list; UNKNOWN when the value is NULL; TRUE when a non-NULL member
  equals it; otherwise UNKNOWN if a member is NULL, else FALSE. A NULL *collection* (a subject
  property or context value that is ``None``) is UNKNOWN;
* ``IsNull``: two-valued;
* ``Not``/``And``/``Or``: Kleene's tables (``NOT UNKNOWN`` = UNKNOWN, ``FALSE AND UNKNOWN`` =
  FALSE, ``TRUE OR UNKNOWN`` = TRUE);
* ``Related``: two-valued ``EXISTS``: TRUE iff some related row makes the inner rule TRUE;
* ``Same(scope)``: TRUE iff the object in ``scope`` is the subject (same table, same primary key);
* ``Reroot``: two-valued, like ``Related``, but the related object becomes the *target* of the
  inner rule (and ``it`` is cleared);
* ``Ancestors(parent)``: two-valued: TRUE iff the target or an object reached from it by
  following ``parent`` links (each object once, so a cycle ends the walk) makes the inner rule
  TRUE as its target;
* ``RoleGrant`` (static roles): the role name read from the operand grants ``p`` when a role
  of that name holds ``p`` outright (TRUE), or holds it where a rule holds (the rule's truth, in
  the same scopes); any other name (a role without ``p``, or no role of that name) is FALSE. A
  NULL name is what SQL makes of ``NULL IN (outright holders) OR (NULL = 'r' AND rule_r) ...``:
  UNKNOWN unless nothing could grant (no outright holder, every rule FALSE). ``many=True``: the
  OR of the names in the collection (FALSE when empty), UNKNOWN for a NULL collection;
* ``SqlRule``: the hand-written Python twin of the generated SQL function
  (``strategies.SqlFunction.oracle``): two-valued, as ``key IN (SELECT ...)`` is;
* at the top, only TRUE allows.

:func:`rules_for` repeats the policy's lookup along the class hierarchies (nearest target class,
then nearest subject class, first that has rules wins) from its documented semantics.

The relationships are described here again, as joins over the dicts, independently of the
SQLAlchemy mapping in :mod:`tests.differential.schema`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bastion.roles import RoleGrant
from bastion.rules.nodes import (
    Ancestors,
    And,
    Attr,
    Compare,
    Const,
    Context,
    In,
    IsNull,
    Literal,
    Not,
    Operand,
    Or,
    Related,
    Reroot,
    Rule,
    Same,
    SqlRule,
)

Row = dict[str, Any]
#: table name -> rows (``document_tags`` included)
Data = Mapping[str, Sequence[Row]]
Truth = bool | None  # TRUE, FALSE, UNKNOWN (None)

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "users": ("id",),
    "orgs": ("id",),
    "memberships": ("user_id", "org_id"),
    "documents": ("id",),
    "tags": ("id",),
}


@dataclass(frozen=True)
class Obj:
    """A row and the table it comes from."""

    table: str
    row: Row

    def key(self) -> tuple[Any, ...]:
        return tuple(self.row[c] for c in PRIMARY_KEYS[self.table])


# ---------------------------------------------------------------------------------------------
# relationships, as joins over the dicts


@dataclass(frozen=True)
class Join:
    """Rows of ``remote`` whose ``remote_col`` equals the row's ``local_col`` (SQL ``=``)."""

    remote: str
    local_col: str
    remote_col: str

    def follow(self, data: Data, row: Row) -> list[Row]:
        value = row[self.local_col]
        if value is None:
            return []  # NULL = anything is never TRUE
        return [r for r in data[self.remote] if r[self.remote_col] == value]


@dataclass(frozen=True)
class Through:
    """Rows of ``remote`` linked to the row by an association table."""

    remote: str
    table: str
    local_key: str
    remote_key: str

    def follow(self, data: Data, row: Row) -> list[Row]:
        ids = {a[self.remote_key] for a in data[self.table] if a[self.local_key] == row["id"]}
        return [r for r in data[self.remote] if r["id"] in ids]


RELATIONSHIPS: dict[tuple[str, str], Join | Through] = {
    ("users", "memberships"): Join("memberships", "id", "user_id"),
    ("users", "documents"): Join("documents", "id", "owner_id"),
    ("orgs", "memberships"): Join("memberships", "id", "org_id"),
    ("orgs", "documents"): Join("documents", "id", "org_id"),
    ("memberships", "user"): Join("users", "user_id", "id"),
    ("memberships", "org"): Join("orgs", "org_id", "id"),
    ("documents", "owner"): Join("users", "owner_id", "id"),
    ("documents", "org"): Join("orgs", "org_id", "id"),
    ("documents", "tags"): Through("tags", "document_tags", "document_id", "tag_id"),
    ("documents", "parent"): Join("documents", "parent_id", "id"),
    ("documents", "children"): Join("documents", "id", "parent_id"),
    ("tags", "documents"): Through("documents", "document_tags", "tag_id", "document_id"),
}


def _org_ids(data: Data, user: Row) -> list[Any]:
    return [m["org_id"] for m in data["memberships"] if m["user_id"] == user["id"]]


def _levels_or_none(data: Data, user: Row) -> list[int] | None:
    return None if user["level"] is None else list(range(user["level"] + 1))


#: The plain Python properties of ``User``, recomputed from the dicts.
USER_PROPERTIES: dict[str, Callable[[Data, Row], Any]] = {
    "org_ids": _org_ids,
    "near_levels": lambda data, user: [user["level"], 1],
    "levels_or_none": _levels_or_none,
    "role_names": lambda data, user: [
        m["role"] for m in data["memberships"] if m["user_id"] == user["id"]
    ],
    "name_or_none": lambda data, user: None if user["name"] is None else [user["name"]],
}


# ---------------------------------------------------------------------------------------------
# three-valued logic


def not3(value: Truth) -> Truth:
    return None if value is None else not value


def and3(values: Sequence[Truth]) -> Truth:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def or3(values: Sequence[Truth]) -> Truth:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def compare3(a: Any, op: str, b: Any) -> Truth:
    if a is None or b is None:
        return None
    return bool(_OPS[op](a, b))


def in3(value: Any, members: Any) -> Truth:
    if members is None:
        return None
    members = list(members)
    if not members:
        return False
    if value is None:
        return None
    if any(m is not None and m == value for m in members):
        return True
    return None if any(m is None for m in members) else False


# ---------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class Env:
    data: Data
    subject: Obj
    target: Obj
    context: Mapping[str, Any]
    it: Obj | None = None

    def scope(self, name: str) -> Obj:
        obj = {"subject": self.subject, "target": self.target, "it": self.it}[name]
        if obj is None:
            raise AssertionError(f"oracle: scope {name!r} is not available")
        return obj


def value_of(operand: Operand, env: Env) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    if isinstance(operand, Context):
        return env.context[operand.name]
    assert isinstance(operand, Attr)
    obj = env.scope(operand.scope)
    if operand.name in obj.row:
        return obj.row[operand.name]
    if obj.table == "users" and operand.name in USER_PROPERTIES:
        return USER_PROPERTIES[operand.name](env.data, obj.row)
    raise AssertionError(f"oracle: {obj.table} has no attribute {operand.name!r}")


def evaluate(rule: Rule, env: Env) -> Truth:
    """The three-valued truth of ``rule`` for ``env``."""
    if isinstance(rule, Const):
        return rule.value
    if isinstance(rule, And):
        return and3([evaluate(r, env) for r in rule.items])
    if isinstance(rule, Or):
        return or3([evaluate(r, env) for r in rule.items])
    if isinstance(rule, Not):
        return not3(evaluate(rule.item, env))
    if isinstance(rule, Compare):
        return compare3(value_of(rule.left, env), rule.op, value_of(rule.right, env))
    if isinstance(rule, In):
        return in3(value_of(rule.left, env), value_of(rule.values, env))
    if isinstance(rule, IsNull):
        is_null = value_of(rule.operand, env) is None
        return not is_null if rule.negated else is_null
    if isinstance(rule, Related):
        obj = env.scope(rule.scope)
        relation = RELATIONSHIPS[(obj.table, rule.name)]
        rows = relation.follow(env.data, obj.row)
        return any(
            evaluate(rule.where, replace(env, it=Obj(relation.remote, r))) is True for r in rows
        )
    if isinstance(rule, Reroot):
        obj = env.scope(rule.scope)
        relation = RELATIONSHIPS[(obj.table, rule.name)]
        rows = relation.follow(env.data, obj.row)
        return any(
            evaluate(rule.rule, replace(env, target=Obj(relation.remote, r), it=None)) is True
            for r in rows
        )
    if isinstance(rule, Ancestors):
        return any(
            evaluate(rule.rule, replace(env, target=node, it=None)) is True
            for node in _ancestors(env.data, env.target, rule.parent)
        )
    if isinstance(rule, Same):
        obj = env.scope(rule.scope)
        return obj.table == env.subject.table and obj.key() == env.subject.key()
    if isinstance(rule, RoleGrant):
        return _role_grant(rule, env)
    if isinstance(rule, SqlRule):
        assert env.target.table == "documents", "SQL functions are written for documents"
        return bool(rule.fn.oracle(env.data, env.subject.row, env.target.row))
    raise AssertionError(f"oracle: unknown node {rule!r}")


def _role_grant(rule: RoleGrant, env: Env) -> Truth:
    """Read from the role definitions themselves (not from the node's helper methods)."""
    outright: set[str] = set()
    conditional: dict[str, Rule] = {}
    for role in rule.roles.roles.values():
        held = role.permissions.get(rule.permission)
        if held is None:
            continue
        if held.rule is None:
            outright.add(role.name)
        else:
            conditional[role.name] = held.rule

    def one(name: Any) -> Truth:
        if name is None:
            return or3(
                [None if outright else False]
                + [and3([None, evaluate(r, env)]) for r in conditional.values()]
            )
        if name in outright:
            return True
        if name in conditional:
            return evaluate(conditional[name], env)
        return False

    value = value_of(rule.role, env)
    if not rule.many:
        return one(value)
    if value is None:
        return None
    return or3([one(name) for name in value])


def _ancestors(data: Data, start: Obj, parent: str) -> list[Obj]:
    """``start`` and the objects above it, each once (a cycle ends the walk)."""
    relation = RELATIONSHIPS[(start.table, parent)]
    walk, seen, node = [], set(), start
    while node.key() not in seen:
        seen.add(node.key())
        walk.append(node)
        above = relation.follow(data, node.row)
        if not above:
            break
        (row,) = above  # many-to-one: at most one parent
        node = Obj(relation.remote, row)
    return walk


def truth(rule: Rule, data: Data, subject: Row, target: Row, context: Mapping[str, Any]) -> Truth:
    """The three-valued truth of ``rule`` for the user ``subject`` and the document ``target``."""
    return evaluate(rule, Env(data, Obj("users", subject), Obj("documents", target), context))


def allows(rule: Rule, data: Data, subject: Row, target: Row, context: Mapping[str, Any]) -> bool:
    """Does ``rule`` allow the user ``subject`` on the document ``target``? (TRUE only)"""
    return truth(rule, data, subject, target, context) is True


# ---------------------------------------------------------------------------------------------
# policies along class hierarchies


def rules_for(
    registered: Sequence[tuple[str, str, Rule]],
    subject_bases: Sequence[str],
    target_bases: Sequence[str],
) -> list[Rule]:
    """The rules that decide for a subject and a target whose classes have these bases (each
    nearest first), from ``(subject classes, target classes, rule)`` registrations: the nearest
    target class that has rules for some subject base, then the nearest such subject class
    (``registered``: ``(subject class, target class, rule)``)."""
    for target_class in target_bases:
        for subject_class in subject_bases:
            found = [
                rule for (s, t, rule) in registered if s == subject_class and t == target_class
            ]
            if found:
                return found
    return []


def policy_allows(
    rules: Sequence[Rule], data: Data, subject: Row, target: Row, context: Mapping[str, Any]
) -> bool:
    """The OR of ``rules`` (no rule denies), TRUE only."""
    env = Env(data, Obj("users", subject), Obj("documents", target), context)
    return or3([evaluate(rule, env) for rule in rules]) is True
