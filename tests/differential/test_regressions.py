"""Explicit regression tests for disagreements the differential suite found.

Each test names the rule, the data and the answer SQL's semantics give, then checks that every
path (Python check, SQL check, both filter shapes) and the oracle give that answer.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bastion import Authorizer, Policy
from bastion.rules.nodes import (
    ALLOW,
    Ancestors,
    Attr,
    Compare,
    Literal,
    Related,
    Reroot,
    Rule,
    Same,
)

from .schema import Base, Document, Invoice, User
from .test_differential import StatementCounter, check_rule, load, make_policy


def _data(**tables: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    empty: dict[str, list[dict[str, Any]]] = {
        "users": [],
        "orgs": [],
        "tags": [],
        "memberships": [],
        "documents": [],
        "document_tags": [],
    }
    return {**empty, **tables}


def _user(id: int, level: int | None = None) -> dict[str, Any]:
    return {"id": id, "name": None, "level": level, "is_admin": None, "kind": "user"}


def _document(
    id: int,
    owner_id: int | None = None,
    *,
    level: int | None = None,
    parent_id: int | None = None,
    kind: str = "document",
) -> dict[str, Any]:
    return {
        "id": id,
        "owner_id": owner_id,
        "org_id": None,
        "is_public": None,
        "status": None,
        "level": level,
        "parent_id": parent_id,
        "kind": kind,
    }


def assert_allowed(
    engine: Engine, data: dict[str, list[dict[str, Any]]], rule: Rule, expected: dict[int, set[int]]
) -> None:
    """Every path agrees with the oracle, and the filter gives ``expected`` (user -> doc ids)."""
    Base.metadata.create_all(engine)
    load(engine, data)
    counter = StatementCounter(engine)
    try:
        check_rule(engine, counter, data, rule, {})
    finally:
        counter.remove()
    with Session(engine) as session:
        authz = Authorizer(make_policy(rule), session)
        found = {
            user.id: set(session.scalars(authz.filter(user, "p", sa.select(Document.id))))
            for user in session.scalars(sa.select(User))
        }
    assert found == expected


# Same("subject") -- "the subject is the subject" -- is TRUE. The SQL compiler read the
# "subject" scope as ``it``: refused at registration outside .any()/.has(), and inside one it
# compared the related object with the subject (so ``target.owner.has(Same("subject"))`` meant
# "owned by the subject" instead of "has an owner").


def test_same_subject_is_true(engine: Engine) -> None:
    data = _data(users=[_user(1), _user(2)], documents=[_document(1, 1), _document(2)])
    assert_allowed(engine, data, Same("subject"), {1: {1, 2}, 2: {1, 2}})


def test_same_subject_inside_a_relationship_is_true(engine: Engine) -> None:
    data = _data(
        users=[_user(1), _user(2)],
        documents=[_document(1, 1), _document(2, 2), _document(3)],
    )
    rule = Related("target", "owner", Same("subject"))  # the document has an owner
    assert_allowed(engine, data, rule, {1: {1, 2}, 2: {1, 2}})


@pytest.mark.parametrize("rule", [Same("subject"), Related("target", "owner", Same("subject"))])
def test_same_subject_registers(rule: Rule) -> None:
    Policy(["p"]).allow("p", subject=User, target=Document, when=rule)


# who_can() with Ancestors whose rule reads the subject. The descendants CTE cannot be
# correlated with the subject row that who_can() selects: ``subject.level > target.level`` put a
# ``FROM users`` of its own in the CTE (a cross join: the rule held for *some* user, so every
# user was listed), and ``subject.memberships.any()`` was "missing FROM-clause entry for table
# users" on PostgreSQL. Fixed with an (object, ancestor) closure CTE and a correlated EXISTS.

TREE = _data(
    users=[_user(1, level=1), _user(2, level=3)],
    orgs=[{"id": 1, "plan": None, "tier": None}],
    memberships=[{"user_id": 1, "org_id": 1, "role": None}],
    documents=[_document(1, parent_id=2), _document(2, level=2), _document(3, level=0)],
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # only user 2 (level 3) outranks document 2 (level 2), the parent of document 1;
        # both users outrank document 3 (level 0)
        (
            Ancestors("parent", Compare(Attr("subject", "level"), ">", Attr("target", "level"))),
            {1: {2}, 2: {2}, 3: {1, 2}},
        ),
        # only user 1 has a membership
        (Ancestors("parent", Related("subject", "memberships", ALLOW)), {1: {1}, 2: {1}, 3: {1}}),
    ],
)
def test_who_can_with_ancestors_reading_the_subject(
    engine: Engine, rule: Rule, expected: dict[int, set[int]]
) -> None:
    by_user = {u: {d for d, users in expected.items() if u in users} for u in (1, 2)}
    assert_allowed(engine, TREE, rule, by_user)
    with Session(engine) as session:
        authz = Authorizer(make_policy(rule), session)
        found = {
            doc.id: set(session.scalars(authz.who_can("p", doc).with_only_columns(User.id)))
            for doc in session.scalars(sa.select(Document))
        }
    assert found == expected


# explain() of a Reroot (deferral) looked at the first 5 related objects only (it lists 5 in
# the trace), so it said "denied" where check() allows through the 6th. Fixed: every related
# object is tried, only the first denials are listed. The differential data has at most 5
# documents, so this test carries the case.


def test_explain_of_a_deferral_reads_every_related_object(engine: Engine) -> None:
    children = [_document(i, level=1 if i == 7 else 0, parent_id=1) for i in range(2, 8)]
    data = _data(users=[_user(1)], documents=[_document(1), *children])
    rule = Reroot("target", "children", Compare(Attr("target", "level"), "==", Literal(1)))
    assert_allowed(engine, data, rule, {1: {1}})  # check, filter, who_can ... and the oracle
    with Session(engine) as session:
        authz = Authorizer(make_policy(rule), session)
        user, doc = session.get(User, 1), session.get(Document, 1)
        assert authz.check(user, "p", doc)
        assert authz.explain(user, "p", doc).allowed


# Ancestors on an object of a single-table-inheritance subclass. The SQL compiler built the tree
# (the rows satisfying the rule and their descendants) from aliases of the *target's* class, so
# for an ``Invoice`` every ancestor had to be an invoice too (``kind IN ('invoice',
# 'receipt')``): an invoice under a plain document was allowed by the Python walk and by a filter
# over ``Document``, and denied by ``check`` in SQL, ``check_many`` and a filter over ``Invoice``.
# Fixed in rules/to_sql.py: the tree's aliases are of the class ``parent`` leads to.


def test_ancestors_of_a_subclass_object_reach_a_base_class_parent(engine: Engine) -> None:
    data = _data(
        users=[_user(1)],
        documents=[
            _document(1, level=2),  # a plain document, the root
            _document(2, parent_id=1, kind="invoice"),
            _document(3, parent_id=2, kind="receipt"),
            _document(4, kind="invoice"),
        ],
    )
    rule = Ancestors("parent", Compare(Attr("target", "level"), "==", Literal(2)))
    assert_allowed(engine, data, rule, {1: {1, 2, 3}})  # every path, and filter over Document
    with Session(engine) as session:
        authz = Authorizer(make_policy(rule), session)
        user = session.get(User, 1)
        found = set(session.scalars(authz.filter(user, "p", sa.select(Invoice.id))))
        assert found == {2, 3}
