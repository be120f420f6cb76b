"""Whole policies: lookup along class hierarchies, SQL-only rules and role registrations.

Each example draws a data set (users are ``User`` or ``Admin(User)``, documents ``Document``,
``Invoice(Document)`` or ``Receipt(Invoice)``: single-table inheritance) and several policies of
1-4 registrations of the permission ``p``, each on a random (subject class, target class):

``allow``     ``policy.allow("p", subject=S, target=T, when=<random rule tree>)``; the tree may
              hold SQL-only leaves (``SqlRule``) and role grants (``RoleGrant``);
``sql_rule``  ``policy.sql_rule("p", bearer=S, target=T)(<SQL function>)`` (the shield form);
``roles``     ``RolePolicy(...).register(policy, subject=S, target=T, role=subject.name)`` (or a
              collection of role names, ``many=True``).

The oracle (:func:`oracle.rules_for`) looks the rules up as documented (nearest target class,
then nearest subject class; the rules found combine with OR) and evaluates them; an SQL function's
oracle is its hand-written Python twin (``strategies.SQL_FUNCTIONS``). For every (user, document)
these agree with it:

``python``        ``check`` on fully loaded objects (no statement; at most one when the policy
                  holds a SQL-only rule, which has no in-process path);
``explain``       ``explain(...).allowed`` on the loaded objects;
``sql_expired``   ``check`` on an expired document (at most one statement);
``check_many``    ``check_many`` on the page of documents (one statement per class);
``filter_*``      the document's id in ``filter(user, "p", select(C.id))`` for its own class
                  ``C`` and (a documented consequence of lookup by class) for each base class
                  ``C``, whose rules then apply to the row; both filter shapes.

Cases (a user, a document and the class whose rules apply, on every path) are counted per
backend and must reach ``MIN_CASES``; ``BASTION_DIFF_POLICY_EXAMPLES`` changes the number of
examples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bastion import Authorizer, Policy
from bastion.roles import RolePolicy
from bastion.rules import dsl
from bastion.rules.nodes import Rule, SqlRule

from . import oracle
from .schema import Admin, Base, Document, Invoice, Receipt, User
from .strategies import (
    CLASS_OF_KIND,
    SUBJECT_CLASSES,
    TARGET_CLASSES,
    Registration,
    contexts,
    datasets,
    policies,
)
from .test_differential import Loaded, StatementCounter, _subjects, load

#: Examples per backend; each checks ``POLICIES`` policies on 3-4 users x 3-5 documents, so 80
#: examples make at least 80 x 3 x 9 = 2160 cases.
EXAMPLES = int(os.environ.get("BASTION_DIFF_POLICY_EXAMPLES", "80"))
POLICIES = 3
MIN_CASES = 1000

SUBJECTS: dict[str, type[User]] = {"User": User, "Admin": Admin}
TARGETS: dict[str, type[Document]] = {"Document": Document, "Invoice": Invoice, "Receipt": Receipt}

#: Paths that answer for the document's own class only (the others: for its bases too).
CHECK_PATHS = frozenset({"python", "explain", "sql_expired", "check_many"})

Data = Mapping[str, Sequence[dict[str, Any]]]
#: (user id, document id, the class whose rules apply) -> allowed
Key = tuple[int, int, str]
Answers = dict[Key, bool]


def build_policy(registrations: Sequence[Registration]) -> Policy:
    policy = Policy(["p"])
    for i, reg in enumerate(registrations):
        subject, target = SUBJECTS[reg.subject], TARGETS[reg.target]
        if reg.how == "allow":
            policy.allow("p", subject=subject, target=target, when=reg.rule, name=f"rule{i}")
        elif reg.how == "sql_rule":
            policy.sql_rule("p", bearer=subject, target=target, name=f"sql{i}")(reg.function)
        else:
            assert reg.roles is not None
            roles = RolePolicy(list(reg.roles.roles.values()), name=f"roles{i}")
            role = getattr(dsl.subject, reg.role_from)
            roles.register(policy, subject=subject, target=target, role=role, many=reg.many)
    return policy


def has_sql_rule(registrations: Sequence[Registration]) -> bool:
    def walk(rule: Rule) -> bool:
        return isinstance(rule, SqlRule) or any(walk(c) for c in rule.children())

    return any(walk(reg.node()) for reg in registrations)


def _class_names(cls: type) -> list[str]:
    """``cls`` and its bases among the generated classes, nearest first."""
    return [c.__name__ for c in cls.__mro__ if c.__name__ in TARGETS]


def oracle_answers(
    registrations: Sequence[Registration], data: Data, context: Mapping[str, Any]
) -> Answers:
    registered = [(r.subject, r.target, r.node()) for r in registrations]
    answers: Answers = {}
    for user in data["users"]:
        bearer_bases = SUBJECT_CLASSES[CLASS_OF_KIND[user["kind"]]]
        for doc in data["documents"]:
            for cls in TARGET_CLASSES[CLASS_OF_KIND[doc["kind"]]]:  # own class, then bases
                rules = oracle.rules_for(registered, bearer_bases, TARGET_CLASSES[cls])
                allowed = oracle.policy_allows(rules, data, user, doc, context)
                answers[(user["id"], doc["id"], cls)] = allowed
    return answers


def loaded_answers(
    loaded: Loaded,
    policy: Policy,
    counter: StatementCounter,
    limit: int,
    context: Mapping[str, Any],
) -> dict[str, Answers]:
    authz = Authorizer(policy, loaded.session)
    found: dict[str, Answers] = {"python": {}, "explain": {}}
    for user in loaded.users:
        for doc in loaded.documents:
            key = (user.id, doc.id, type(doc).__name__)
            with counter.at_most(limit, "check on loaded objects"):
                found["python"][key] = authz.check(user, "p", doc, **context)
            found["explain"][key] = authz.explain(user, "p", doc, **context).allowed
    return found


def database_answers(
    engine: Engine, counter: StatementCounter, policy: Policy, context: Mapping[str, Any]
) -> dict[str, Answers]:
    with Session(engine) as session:
        users = _subjects(session)
        documents = list(session.scalars(sa.select(Document)))
        authz = Authorizer(policy, session)
        found: dict[str, Answers] = {"sql_expired": {}, "check_many": {}}
        classes = len({type(d) for d in documents})
        for user in users:
            with counter.at_most(classes, "check_many on a page of documents"):
                many = authz.check_many(user, "p", documents, **context)
            for doc in documents:
                found["check_many"][(user.id, doc.id, type(doc).__name__)] = many[doc.id]
        for doc in documents:
            own = type(doc).__name__
            for user in users:
                key = (user.id, doc.id, own)  # read before expiring: reading would reload it
                session.expire(doc)
                with counter.at_most(1, "check on an expired document"):
                    found["sql_expired"][key] = authz.check(user, "p", doc, **context)
        for shape, union, inline in (
            ("filter_union", True, True),
            ("filter_plain", False, True),
            ("filter_subqueries", True, False),
        ):
            found[shape] = filter_answers(session, users, policy, union, inline, context)
    return found


def filter_answers(
    session: Session,
    users: list[User],
    policy: Policy,
    union: bool,
    inline: bool,
    context: Mapping[str, Any],
) -> Answers:
    """For each class ``C``: the rows of ``select(C.id)`` that ``filter`` keeps."""
    authz = Authorizer(policy, session, union_branches=union, inline_loaded=inline)
    found: Answers = {}
    for name, cls in TARGETS.items():
        ids = list(session.scalars(sa.select(cls.id)))
        for user in users:
            kept = set(session.scalars(authz.filter(user, "p", sa.select(cls.id), **context)))
            found.update({(user.id, i, name): i in kept for i in ids})
    return found


def assert_agree(
    registrations: Sequence[Registration],
    data: Data,
    context: Mapping[str, Any],
    paths: dict[str, Answers],
) -> int:
    """Every path gives the oracle's answer for every key it has; return the check-case count."""
    expected = paths["oracle"]
    own = {k for k in expected if k[2] == _own_class(data, k[1])}
    for name, answers in paths.items():
        wanted = own if name in CHECK_PATHS else expected.keys()
        assert answers.keys() == wanted, f"{name}: cases differ"
        for key, allowed in sorted(answers.items()):
            if allowed is not expected[key]:
                by_path = {n: a.get(key) for n, a in paths.items()}
                pytest.fail(
                    f"answers disagree for (user, document, rules of) {key}: {by_path}\n"
                    f"registrations:\n  "
                    + "\n  ".join(
                        f"{r.how} {r.subject}->{r.target}: {r.node()}" for r in registrations
                    )
                    + f"\ncontext: {dict(context)}\ndata: {dict(data)}"
                )
    return len(own)


def _own_class(data: Data, doc_id: int) -> str:
    (doc,) = [d for d in data["documents"] if d["id"] == doc_id]
    return CLASS_OF_KIND[doc["kind"]]


@pytest.mark.slow
def test_policies_agree_along_class_hierarchies(engine: Engine, backend: str) -> None:
    Base.metadata.create_all(engine)
    counter = StatementCounter(engine)
    cases = 0
    kinds: dict[str, int] = {"allow": 0, "sql_rule": 0, "roles": 0}

    @settings(max_examples=EXAMPLES)
    @given(
        data=datasets(),
        drawn=st.lists(policies(), min_size=POLICIES, max_size=POLICIES),
        context=contexts(),
    )
    def differential(data: Data, drawn: list[list[Registration]], context: dict[str, Any]) -> None:
        nonlocal cases
        load(engine, data)
        with Session(engine) as session:
            loaded = Loaded(session)
            for registrations in drawn:
                policy = build_policy(registrations)
                limit = 1 if has_sql_rule(registrations) else 0
                paths = {
                    "oracle": oracle_answers(registrations, data, context),
                    **loaded_answers(loaded, policy, counter, limit, context),
                    **database_answers(engine, counter, policy, context),
                }
                cases += assert_agree(registrations, data, context, paths)
                for reg in registrations:
                    kinds[reg.how] += 1

    try:
        differential()
    finally:
        counter.remove()
    print(f"{backend}: {cases} policy cases on every path; registrations {kinds}")
    assert cases >= min(MIN_CASES, 9 * POLICIES * EXAMPLES), f"only {cases} cases on {backend}"
