"""check == filter == who_can == oracle, on random data and rules, on SQLite and PostgreSQL.

For every generated example (a data set, two or three rules, context values) and every
(user, document) pair, these answers must agree with the brute-force oracle of
:mod:`tests.differential.oracle`:

``python``        ``check`` on fully loaded objects: the Python path (no SQL statement may run);
``sql_expired``   ``check`` on an expired document: the ``SELECT EXISTS`` path (at most one
                  statement per check);
``sql_alone``     ``check`` on a document loaded alone by ``session.get`` (columns loaded; no
                  relationship, no other document in the session): Python as far as it goes,
                  then at most one statement (two with ``Ancestors``: see ``alone_answers``);
``check_many``    ``check_many`` on a page of documents without relationships (one statement
                  per class of the page);
``filter_union``  the document's id in ``filter(user, "p", select(Document.id))``, with the
``filter_plain``  union-of-branches shape and without it (``union_branches=False``), the
                  users' loaded memberships written into the SQL as values;
``filter_subqueries`` the same with subqueries over the memberships (``inline_loaded=False``);
``who_can``       the user's id in ``who_can("p", document)`` (skipped for rules that read a
                  subject property, which ``who_can`` refuses, as documented).

On the loaded objects, the three-valued truth (TRUE/FALSE/UNKNOWN) of the compiled Python
predicate and of ``explain`` must also equal the oracle's.

Each example also checks ``QUICK_RULES`` more rules on the cheap paths only (``python``, both
``filter`` shapes, oracle), where most compiler disagreements show. Context values (``ctx.*``)
are passed to every call. The (subject, document, rule) cases on every path are counted per
backend and must reach ``MIN_CASES``. ``BASTION_DIFF_EXAMPLES`` and ``BASTION_DIFF_QUICK_RULES``
change the number of examples and of quick rules per example (a failure is replayed first by
hypothesis's example database on the next run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from bastion import Authorizer, Policy, RuleNotTranslatable
from bastion.rules.nodes import Ancestors, Attr, Rule

from . import oracle
from .schema import DOCUMENTS, TABLES, Base, Document, Membership, Org, Tag, User
from .strategies import SUBJECT_COLLECTIONS, SUBJECT_NAME_COLLECTIONS, contexts, datasets, rules

#: Examples per backend: each runs 2-3 rules on 3-4 users x 3-5 documents, so 60 examples make
#: at least 60 x 18 = 1080 cases.
EXAMPLES = int(os.environ.get("BASTION_DIFF_EXAMPLES", "60"))
#: The (subject, document, rule) cases each backend must check on every path.
MIN_CASES = 1000
#: Rules per example checked on the cheap paths only (Python check, filter, oracle).
QUICK_RULES = int(os.environ.get("BASTION_DIFF_QUICK_RULES", "8"))

Data = Mapping[str, Sequence[dict[str, Any]]]


class StatementCounter:
    """Counts the statements an engine sends to the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1

    def remove(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)

    @contextmanager
    def at_most(self, limit: int, what: str) -> Iterator[None]:
        before = self.count
        yield
        ran = self.count - before
        assert ran <= limit, f"{what} ran {ran} SQL statements (at most {limit} allowed)"


def load(engine: Engine, data: Data) -> None:
    """Replace the contents of every table with ``data``."""
    documents = DOCUMENTS
    with engine.begin() as connection:
        connection.execute(documents.update().values(parent_id=None))
        for table in reversed(TABLES):
            connection.execute(table.delete())
        for table in TABLES:
            rows = data[table.name]
            if table is documents:  # parents may form cycles: link them after inserting
                rows = [{**row, "parent_id": None} for row in rows]
            if rows:
                connection.execute(table.insert(), list(rows))
        links = [
            {"key": d["id"], "parent": d["parent_id"]}
            for d in data["documents"]
            if d["parent_id"] is not None
        ]
        if links:
            update = (
                documents.update()
                .where(documents.c.id == sa.bindparam("key"))
                .values(parent_id=sa.bindparam("parent"))
            )
            connection.execute(update, links)


def load_everything(session: Session) -> list[Any]:
    """Every row of every table with every relationship loaded (the Python path needs no SQL)."""
    objects: list[Any] = []
    queries = [
        sa.select(User).options(selectinload(User.memberships), selectinload(User.documents)),
        sa.select(Org).options(selectinload(Org.memberships), selectinload(Org.documents)),
        sa.select(Membership).options(selectinload(Membership.user), selectinload(Membership.org)),
        sa.select(Document).options(
            selectinload(Document.owner),
            selectinload(Document.org),
            selectinload(Document.tags),
            selectinload(Document.parent),
            selectinload(Document.children),
        ),
        sa.select(Tag).options(selectinload(Tag.documents)),
    ]
    for query in queries:
        objects += session.scalars(query).all()
    for obj in objects:
        unloaded = sa.inspect(obj).unloaded
        assert not unloaded, f"{obj!r}: {sorted(unloaded)} not loaded"
    return objects


Pair = tuple[int, int]  #: (user id, document id)
Answers = dict[Pair, bool]
Truths = dict[Pair, "bool | None"]  #: TRUE, FALSE or UNKNOWN (None)

#: Subject attributes that are Python properties, not columns: ``who_can`` reads the rule from
#: the subject's side in SQL and refuses them (documented ``RuleNotTranslatable``).
PROPERTIES = frozenset(SUBJECT_COLLECTIONS + SUBJECT_NAME_COLLECTIONS)


def make_policy(rule: Rule) -> Policy:
    policy = Policy(["p"])
    policy.allow("p", subject=User, target=Document, when=rule)
    return policy


def oracle_answers(rule: Rule, data: Data, context: Mapping[str, Any]) -> Answers:
    return {
        (user["id"], doc["id"]): oracle.allows(rule, data, user, doc, context)
        for user in data["users"]
        for doc in data["documents"]
    }


def _subjects(session: Session) -> list[User]:
    # With their memberships: the User properties read them (a lazy load would be a statement).
    return list(session.scalars(sa.select(User).options(selectinload(User.memberships))))


class Loaded:
    """A session holding every row with every relationship loaded: checks need no SQL."""

    def __init__(self, session: Session) -> None:
        self.objects = load_everything(session)  # strong references: the identity map is weak
        self.session = session
        self.users = [o for o in self.objects if isinstance(o, User)]
        self.documents = [o for o in self.objects if isinstance(o, Document)]

    def answers(
        self, policy: Policy, counter: StatementCounter, context: Mapping[str, Any]
    ) -> Answers:
        authz = Authorizer(policy, self.session)
        with counter.at_most(0, "check on loaded objects"):
            return {
                (user.id, doc.id): authz.check(user, "p", doc, **context)
                for user in self.users
                for doc in self.documents
            }


def truth_answers(
    loaded: Loaded, policy: Policy, rule: Rule, data: Data, context: Mapping[str, Any]
) -> dict[str, Truths]:
    """The three-valued truth of the rule (TRUE/FALSE/UNKNOWN, not just allow/deny) from the
    oracle, the compiled Python predicate, and ``explain`` (a third evaluator, with reasons)."""
    plan = policy.plan("p", User, Document)
    authz = Authorizer(policy, loaded.session)
    users = {u["id"]: u for u in data["users"]}
    docs = {d["id"]: d for d in data["documents"]}
    found: dict[str, Truths] = {"oracle": {}, "predicate": {}, "explain": {}}
    for user in loaded.users:
        for doc in loaded.documents:
            pair = (user.id, doc.id)
            env = oracle.Env(
                data,
                oracle.Obj("users", users[user.id]),
                oracle.Obj("documents", docs[doc.id]),
                context,
            )
            found["oracle"][pair] = oracle.evaluate(rule, env)
            found["predicate"][pair] = plan.predicate(user, doc, dict(context), None)
            (trace,) = authz.explain(user, "p", doc, **context).children  # one rule
            found["explain"][pair] = trace.outcome
    return found


def assert_same_truths(
    engine: Engine, rule: Rule, data: Data, context: Mapping[str, Any], paths: dict[str, Truths]
) -> None:
    expected = paths["oracle"]
    for pair, truth in sorted(expected.items()):
        if any(values[pair] is not truth for values in paths.values()):
            by_path = {name: values[pair] for name, values in paths.items()}
            pytest.fail("three-valued " + _report(engine, rule, data, context, pair, by_path))


def filter_answers(
    session: Session, users: list[User], policy: Policy, context: Mapping[str, Any]
) -> dict[str, Answers]:
    """The documents ``filter`` keeps for each user, with and without the union shape, and
    with the users' loaded memberships written in as values (the default) or as subqueries."""
    ids = list(session.scalars(sa.select(Document.id)))
    found: dict[str, Answers] = {}
    shapes = (
        ("filter_union", True, True),
        ("filter_plain", False, True),
        ("filter_subqueries", True, False),
    )
    for name, union, inline in shapes:
        authz = Authorizer(policy, session, union_branches=union, inline_loaded=inline)
        found[name] = {}
        for user in users:
            kept = set(session.scalars(authz.filter(user, "p", sa.select(Document.id), **context)))
            found[name].update({(user.id, i): i in kept for i in ids})
    return found


def database_answers(
    engine: Engine, counter: StatementCounter, policy: Policy, context: Mapping[str, Any]
) -> dict[str, Answers]:
    """``filter`` (both shapes), ``check_many`` on a page of documents whose relationships are
    not loaded, and ``check`` on expired documents (``SELECT EXISTS``)."""
    with Session(engine) as session:
        users = _subjects(session)
        documents = list(session.scalars(sa.select(Document)))
        found = filter_answers(session, users, policy, context)
        authz = Authorizer(policy, session)
        found["check_many"] = {}
        # one statement per class of the page (Document, Invoice, Receipt: single-table
        # inheritance; each class has its own plan), as documented
        classes = len({type(doc) for doc in documents})
        for user in users:
            with counter.at_most(classes, "check_many on a page of documents"):
                many = authz.check_many(user, "p", documents, **context)
            found["check_many"].update({(user.id, i): allowed for i, allowed in many.items()})
        found["sql_expired"] = {}
        for doc in documents:
            for user in users:
                pair = (user.id, doc.id)  # read before expiring: reading would reload it
                session.expire(doc)
                with counter.at_most(1, "check on an expired document"):
                    found["sql_expired"][pair] = authz.check(user, "p", doc, **context)
    return found


def alone_answers(
    engine: Engine, counter: StatementCounter, policy: Policy, context: Mapping[str, Any]
) -> Answers:
    """``check`` on a document loaded alone by ``session.get`` (columns loaded; no relationship,
    parent or other document in the session): Python as far as it goes, then one query."""
    # Ancestors: the Python walk asks for the missing ancestors in one query and walks again;
    # if the rule then still lacks something (a relationship of the target, say), the check
    # falls back to SELECT EXISTS: two statements (by design of Authorizer.check).
    limit = 2 if contains(policy, Ancestors) else 1
    answers = {}
    for doc_id in _ids(engine, Document):
        with Session(engine) as session:
            users = _subjects(session)
            doc = session.get(Document, doc_id)
            authz = Authorizer(policy, session)
            for user in users:
                with counter.at_most(limit, "check on a document loaded alone"):
                    answers[(user.id, doc_id)] = authz.check(user, "p", doc, **context)
    return answers


def contains(policy: Policy, kind: type[Rule]) -> bool:
    def walk(rule: Rule) -> bool:
        return isinstance(rule, kind) or any(walk(child) for child in rule.children())

    return any(walk(r.rule) for r in policy.rules())


def _ids(engine: Engine, cls: type[User] | type[Document]) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(sa.select(cls.id)))


def who_can_answers(
    engine: Engine, policy: Policy, rule: Rule, context: Mapping[str, Any]
) -> Answers | None:
    """``who_can`` for every document; None when it refuses a rule that reads a subject
    property (it reads the rule from the subject's side, in SQL: a documented refusal)."""
    with Session(engine) as session:
        authz = Authorizer(policy, session)
        documents = list(session.scalars(sa.select(Document)))
        user_ids = _ids(engine, User)
        answers = {}
        for doc in documents:
            try:
                stmt = authz.who_can("p", doc, **context)
            except RuleNotTranslatable:
                if reads_subject_property(rule):
                    return None
                raise
            allowed = set(session.scalars(stmt.with_only_columns(User.id)))
            answers.update({(u, doc.id): u in allowed for u in user_ids})
    return answers


def reads_subject_property(rule: Rule) -> bool:
    if any(
        isinstance(o, Attr) and o.scope == "subject" and o.name in PROPERTIES
        for o in rule.operands()
    ):
        return True
    return any(reads_subject_property(child) for child in rule.children())


def assert_agree(
    engine: Engine, rule: Rule, data: Data, context: Mapping[str, Any], paths: dict[str, Answers]
) -> int:
    """Fail with a report unless every path gives the oracle's answer; return the pair count."""
    expected = paths["oracle"]
    for name, answers in paths.items():
        assert answers.keys() == expected.keys(), f"{name}: pairs differ"
    for pair, allowed in sorted(expected.items()):
        if any(answers[pair] is not allowed for answers in paths.values()):
            by_path = {name: answers[pair] for name, answers in paths.items()}
            pytest.fail(_report(engine, rule, data, context, pair, by_path))
    return len(expected)


def check_rule(
    engine: Engine,
    counter: StatementCounter,
    data: Data,
    rule: Rule,
    context: Mapping[str, Any],
    loaded: Loaded | None = None,
) -> int:
    """Compare every path with the oracle for every (user, document); return the pair count.

    ``loaded`` is a :class:`Loaded` session of ``data`` to reuse (one is made if not given)."""
    policy = make_policy(rule)
    if loaded is None:
        with Session(engine) as session:
            python = Loaded(session).answers(policy, counter, context)
    else:
        python = loaded.answers(policy, counter, context)
        truths = truth_answers(loaded, policy, rule, data, context)
        assert_same_truths(engine, rule, data, context, truths)
    paths: dict[str, Answers] = {
        "oracle": oracle_answers(rule, data, context),
        "python": python,
        **database_answers(engine, counter, policy, context),
        "sql_alone": alone_answers(engine, counter, policy, context),
    }
    who_can = who_can_answers(engine, policy, rule, context)
    if who_can is not None:
        paths["who_can"] = who_can
    return assert_agree(engine, rule, data, context, paths)


def quick_check_rules(
    engine: Engine,
    counter: StatementCounter,
    data: Data,
    rules: list[Rule],
    context: Mapping[str, Any],
    loaded: Loaded,
) -> int:
    """More rules on the cheap paths only (Python ``check``, both ``filter`` shapes, oracle),
    sharing two sessions: these find compiler disagreements at a fraction of the cost."""
    cases = 0
    with Session(engine) as session:
        users = _subjects(session)
        for rule in rules:
            policy = make_policy(rule)
            paths = {
                "oracle": oracle_answers(rule, data, context),
                "python": loaded.answers(policy, counter, context),
                **filter_answers(session, users, policy, context),
            }
            cases += assert_agree(engine, rule, data, context, paths)
            truths = truth_answers(loaded, policy, rule, data, context)
            assert_same_truths(engine, rule, data, context, truths)
    return cases


def _report(
    engine: Engine,
    rule: Rule,
    data: Data,
    context: Mapping[str, Any],
    pair: Pair,
    by_path: Mapping[str, bool | None],
) -> str:
    user_id, doc_id = pair
    with Session(engine) as session:
        subject = session.get(User, user_id)
        try:
            stmt = Authorizer(make_policy(rule), session).filter(
                subject, "p", sa.select(Document.id), **context
            )
            sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        except Exception as exc:  # noqa: BLE001 - the report must not hide the disagreement
            sql = f"<cannot render: {exc!r}>"
    return (
        f"answers disagree for user {user_id}, document {doc_id}: {by_path}\n"
        f"rule: {rule}\nnodes: {rule!r}\ncontext: {dict(context)}\ndata: {dict(data)}\n"
        f"filter SQL:\n{sql}"
    )


@pytest.mark.slow
def test_check_filter_and_oracle_agree(engine: Engine, backend: str) -> None:
    Base.metadata.create_all(engine)
    counter = StatementCounter(engine)
    cases = quick_cases = 0

    @settings(max_examples=EXAMPLES)
    @given(
        data=datasets(),
        rules=st.lists(rules(), min_size=2, max_size=3),
        quick_rules=st.lists(rules(), min_size=QUICK_RULES, max_size=QUICK_RULES),
        context=contexts(),
    )
    def differential(
        data: Data, rules: list[Rule], quick_rules: list[Rule], context: dict[str, Any]
    ) -> None:
        nonlocal cases, quick_cases
        load(engine, data)
        with Session(engine) as session:
            loaded = Loaded(session)
            for rule in rules:
                cases += check_rule(engine, counter, data, rule, context, loaded)
            quick_cases += quick_check_rules(engine, counter, data, quick_rules, context, loaded)

    try:
        differential()
    finally:
        counter.remove()
    print(f"{backend}: {cases} cases on every path, {quick_cases} on the Python and filter paths")
    # Every example makes at least 18 cases; BASTION_DIFF_EXAMPLES may ask for fewer examples.
    assert cases >= min(MIN_CASES, 18 * EXAMPLES), f"only {cases} cases ran on {backend}"
