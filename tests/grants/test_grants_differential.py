"""Stored grants: the Python check, the SQL check, the filter and a brute-force oracle agree on
random grant graphs, on SQLite and PostgreSQL.

Each example is a small world: 3 users, 4 documents, the stored permissions ``a`` and ``b``, up
to 2 bundles and 2 groups, and up to 12 edges (user→permission, user→bundle, user→group,
group→permission, group→bundle) each with a random scope (global; an org, also as non-canonical
text such as ``'01'``; a team; one document; an unrelated type) and a random validity window
(open, expired, not yet valid, current). The rule shapes (one permission each, registered once)
cover global, column, subject, literal and object scopes, ORs with a rule on the target, and
negations (the correlated ``EXISTS`` form). A hypothesis example picks 2-4 of them.

For every (user, document, shape) the answers of

1. ``check`` on loaded objects (Python, effective grants loaded once per user and cached),
1b. ``check`` as a subject's first check in the session (the grants not cached: one prebuilt
   ``SELECT EXISTS`` with the subject, token and scope as parameters),
2. ``check`` on expired objects (the ``SELECT EXISTS`` path when the rule reads a column),
3. ``Authorizer.check_in_database`` (always SQL),
4. ``filter(select(DDoc.id))``,
5. :func:`oracle`, written from the documented semantics over the generated rows only,

must be equal, and so must ``EffectiveGrants.holds`` and the oracle for every (user, token,
scope). Windows are a day away from now, so the clocks of Python and the database cannot
disagree about them.

``BASTION_GRANTS_DIFF_EXAMPLES`` sets the number of examples per backend (default 20).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion import Authorizer, Policy, subject, target
from bastion.grants import effective_grants, forget_grants, grant_models, holds

EXAMPLES = int(os.environ.get("BASTION_GRANTS_DIFF_EXAMPLES", "20"))
MIN_CASES = 300


class DBase(DeclarativeBase):
    pass


class DUser(DBase):
    __tablename__ = "d_users"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    home_org: Mapped[int | None]


class DDoc(DBase):
    __tablename__ = "d_docs"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    org_id: Mapped[int | None]
    team: Mapped[str | None] = mapped_column(sa.String(5))
    owner_id: Mapped[int | None]


g = grant_models(DBase, prefix="dg_")
LINKS = g.register_user(DUser)
TOKENS = ("a", "b")

#: (scope_type, scope_id) of generated edges: global, orgs (also not as scope_key writes them),
#: teams, single documents and a type no rule reads.
SCOPES = [
    ("", ""),
    ("org", "1"),
    ("org", "2"),
    ("org", "01"),
    ("team", "x"),
    ("team", "y"),
    ("DDoc", "1"),
    ("DDoc", "2"),
    ("DDoc", "3"),
    ("other", "1"),
]
WINDOWS = ["open", "expired", "future", "current"]

# -- the oracle ---------------------------------------------------------------------------------


@dataclass
class World:
    users: list[dict[str, Any]]
    docs: list[dict[str, Any]]
    bundles: dict[int, set[str]]  #: bundle id -> tokens
    groups: list[int]
    #: (kind, holder, thing, scope, window); kind in up, ub, ug, gp, gb
    edges: list[tuple[str, Any, Any, tuple[str, str], str]] = field(default_factory=list)


def _valid(window: str) -> bool:
    return window in ("open", "current")


def oracle_holds(world: World, user_id: int, token: str, scope: tuple[str, str] | None) -> bool:
    """Brute force over every path. A path holds in its edges' one non-global scope (global if
    none); two different non-global scopes on one path hold nowhere. ``scope=None``: a NULL
    scope, where only global grants count."""
    paths: list[list[tuple[tuple[str, str], str]]] = []
    for kind, holder, thing, sc, win in world.edges:
        if holder != user_id:
            continue
        if (kind == "up" and thing == token) or (kind == "ub" and token in world.bundles[thing]):
            paths.append([(sc, win)])
        if kind == "ug":
            for kind2, holder2, thing2, sc2, win2 in world.edges:
                if holder2 != thing:
                    continue
                if (kind2 == "gp" and thing2 == token) or (
                    kind2 == "gb" and token in world.bundles[thing2]
                ):
                    paths.append([(sc, win), (sc2, win2)])
    for path in paths:
        if not all(_valid(win) for _, win in path):
            continue
        scoped = {sc for sc, _ in path if sc != ("", "")}
        if not scoped or (scope is not None and scoped == {scope}):
            return True
    return False


def _org(value: Any) -> tuple[str, str] | None:
    return None if value is None else ("org", str(value))


def _team(value: Any) -> tuple[str, str] | None:
    return None if value is None else ("team", value)


H = Callable[[str, "tuple[str, str] | None"], bool]

#: name -> (rule, oracle(user, doc, holds) -> allowed)
SHAPES: dict[str, tuple[Any, Callable[[dict[str, Any], dict[str, Any], H], bool]]] = {
    "global": (holds(g, "a"), lambda u, d, h: h("a", None)),
    "org": (
        holds(g, "a", scope=("org", target.org_id)),
        lambda u, d, h: h("a", _org(d["org_id"])),
    ),
    "object": (
        holds(g, "b", on_target=True),
        lambda u, d, h: h("b", ("DDoc", str(d["id"]))),
    ),
    "owner_or_org": (
        (target.owner_id == subject.id) | holds(g, "b", scope=("org", target.org_id)),
        lambda u, d, h: d["owner_id"] == u["id"] or h("b", _org(d["org_id"])),
    ),
    "not_org": (
        ~holds(g, "b", scope=("org", target.org_id)),
        lambda u, d, h: not h("b", _org(d["org_id"])),
    ),
    "object_not_global": (
        holds(g, "a", on_target=True) & ~holds(g, "b"),
        lambda u, d, h: h("a", ("DDoc", str(d["id"]))) and not h("b", None),
    ),
    "home": (
        holds(g, "a", scope=("org", subject.home_org)),
        lambda u, d, h: h("a", _org(u["home_org"])),
    ),
    "team": (
        holds(g, "b", scope=("team", target.team)),
        lambda u, d, h: h("b", _team(d["team"])),
    ),
    "literal": (holds(g, "a", scope=("org", 2)), lambda u, d, h: h("a", ("org", "2"))),
    "not_owner_and_team": (
        ~(target.owner_id == subject.id) & holds(g, "a", scope=("team", target.team)),
        # NOT (NULL = id) is UNKNOWN: a document without owner is denied
        lambda u, d, h: (
            d["owner_id"] is not None and d["owner_id"] != u["id"] and h("a", _team(d["team"]))
        ),
    ),
}

policy = Policy([f"r.{name}" for name in SHAPES])
for _name, (_rule, _) in SHAPES.items():
    policy.allow(f"r.{_name}", subject=DUser, target=DDoc, when=_rule)

# -- strategies -------------------------------------------------------------------------------


@st.composite
def worlds(draw: st.DrawFn) -> World:
    maybe = st.none() | st.sampled_from([1, 2])
    users = [{"id": i, "home_org": draw(maybe)} for i in (1, 2, 3)]
    docs = [
        {
            "id": i,
            "org_id": draw(maybe),
            "team": draw(st.sampled_from([None, "x", "y"])),
            "owner_id": draw(st.none() | st.sampled_from([1, 2, 3])),
        }
        for i in (1, 2, 3, 4)
    ]
    n_bundles, n_groups = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    bundles = {
        b: set(draw(st.lists(st.sampled_from(TOKENS), max_size=2, unique=True)))
        for b in range(1, n_bundles + 1)
    }
    groups = list(range(1, n_groups + 1))
    kinds = ["up"] + ["ub"] * bool(bundles) + ["ug", "gp"] * bool(groups)
    kinds += ["gb"] * bool(bundles and groups)
    world = World(users, docs, bundles, groups)
    keys: set[tuple[Any, ...]] = set()
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(kinds))
        holder = draw(st.sampled_from(groups if kind in ("gp", "gb") else [1, 2, 3]))
        thing = draw(
            st.sampled_from(
                list(TOKENS) if kind in ("up", "gp") else groups if kind == "ug" else list(bundles)
            )
        )
        scope = draw(st.sampled_from(SCOPES))
        if (kind, holder, thing, scope) in keys:
            continue  # the composite primary key
        keys.add((kind, holder, thing, scope))
        world.edges.append((kind, holder, thing, scope, draw(st.sampled_from(WINDOWS))))
    return world


# -- loading ------------------------------------------------------------------------------------

TABLES = {
    "up": (LINKS.permissions, "user_id", "permission_id"),
    "ub": (LINKS.bundles, "user_id", "bundle_id"),
    "ug": (LINKS.groups, "user_id", "group_id"),
    "gp": (g.group_permissions, "group_id", "permission_id"),
    "gb": (g.group_bundles, "group_id", "bundle_id"),
}


def _times(window: str) -> dict[str, dt.datetime | None]:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    day = dt.timedelta(days=1)
    return {
        "open": {"valid_from": None, "expires_at": None},
        "expired": {"valid_from": None, "expires_at": now - day},
        "future": {"valid_from": now + day, "expires_at": None},
        "current": {"valid_from": now - day, "expires_at": now + day},
    }[window]


def load(engine: Engine, world: World) -> None:
    """Replace every row with ``world`` (one transaction)."""
    token_ids = {t: n for n, t in enumerate(TOKENS, 1)}
    with engine.begin() as c:
        for table in reversed(DBase.metadata.sorted_tables):
            if table is not g.Permission.__table__:
                c.execute(table.delete())
        c.execute(sa.insert(DUser.__table__), world.users)
        c.execute(sa.insert(DDoc.__table__), world.docs)
        if world.bundles:
            c.execute(
                sa.insert(g.Bundle.__table__), [{"id": b, "label": f"b{b}"} for b in world.bundles]
            )
            rows = [
                {"bundle_id": b, "permission_id": token_ids[t]}
                for b, tokens in world.bundles.items()
                for t in tokens
            ]
            if rows:
                c.execute(sa.insert(g.bundle_permissions), rows)
        if world.groups:
            c.execute(
                sa.insert(g.Group.__table__), [{"id": n, "label": f"g{n}"} for n in world.groups]
            )
        for kind, holder, thing, (scope_type, scope_id), window in world.edges:
            table, left, right = TABLES[kind]
            value = token_ids[thing] if kind in ("up", "gp") else thing
            row = {left: holder, right: value, "scope_type": scope_type, "scope_id": scope_id}
            c.execute(sa.insert(table).values(**row, **_times(window)))


def create(engine: Engine) -> None:
    DBase.metadata.create_all(engine)
    with engine.begin() as c:
        c.execute(
            sa.insert(g.Permission.__table__),
            [{"id": n, "token": t} for n, t in enumerate(TOKENS, 1)],
        )


# -- the comparison -------------------------------------------------------------------------------


def compare(engine: Engine, world: World, shapes: list[str]) -> int:
    """Assert that every path agrees for every (user, document, shape); return the case count."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        return _compare(engine, world, shapes, statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)


def _compare(engine: Engine, world: World, shapes: list[str], statements: list[str]) -> int:
    cases = 0
    with Session(engine) as session:
        authz = Authorizer(policy, session)
        users = session.scalars(sa.select(DUser).order_by(DUser.id)).all()
        rows = {d["id"]: d for d in world.docs}
        for user in users:
            u = next(x for x in world.users if x["id"] == user.id)
            grants = effective_grants(session, g, user)
            assert grants is not None

            def h(token: str, scope: tuple[str, str] | None, uid: int = user.id) -> bool:
                return oracle_holds(world, uid, token, scope)

            for token in TOKENS:  # the effective grants themselves
                for scope in SCOPES:
                    expected = h(token, None if scope == ("", "") else scope)
                    assert grants.holds(token, scope) is expected, (user.id, token, scope)
            for shape in shapes:
                permission = f"r.{shape}"
                plan = policy.plan(permission, DUser, DDoc)
                oracle = SHAPES[shape][1]
                docs = session.scalars(sa.select(DDoc).order_by(DDoc.id)).all()  # loaded again
                assert all("org_id" in d.__dict__ for d in docs)
                before = len(statements)
                python = {d.id for d in docs if authz.check(user, permission, d)}
                assert len(statements) == before, "the Python check ran a query"
                first = set()
                for d in docs:
                    forget_grants(session)  # each check is the subject's first: one EXISTS
                    if authz.check(user, permission, d):
                        first.add(d.id)
                assert python == first, (shape, user.id, python, first)
                effective_grants(session, g, user)  # cached again for the next shapes
                for d in docs:
                    session.expire(d)
                expired = {d.id for d in docs if authz.check(user, permission, d)}
                database = {d.id for d in docs if authz.check_in_database(plan, user, d, {})}
                filtered = set(session.scalars(authz.filter(user, permission, sa.select(DDoc.id))))
                expected = {i for i, row in rows.items() if oracle(u, row, h)}
                answers = (python, expired, database, filtered)
                assert python == expired == database == filtered == expected, (
                    shape,
                    user.id,
                    answers,
                    expected,
                )
                cases += len(docs)
    return cases


def test_python_sql_filter_and_oracle_agree(engine: Engine, backend: str) -> None:
    create(engine)
    cases = 0

    @settings(max_examples=EXAMPLES)
    @given(
        world=worlds(),
        shapes=st.lists(st.sampled_from(sorted(SHAPES)), min_size=2, max_size=4, unique=True),
    )
    def run(world: World, shapes: list[str]) -> None:
        nonlocal cases
        load(engine, world)
        cases += compare(engine, world, shapes)

    run()
    print(f"{backend}: {cases} (user, document, rule) cases")
    # Every example makes at least 24 cases (3 users x 4 documents x 2 shapes).
    assert cases >= min(MIN_CASES, 24 * EXAMPLES), f"only {cases} cases ran on {backend}"


def test_the_oracle_itself() -> None:
    """Spot checks of the oracle against hand-worked answers (it must not share a bug)."""
    world = World(
        users=[{"id": 1, "home_org": None}],
        docs=[],
        bundles={1: {"a"}},
        groups=[1],
        edges=[
            ("ug", 1, 1, ("org", "1"), "open"),
            ("gb", 1, 1, ("org", "2"), "open"),  # different scopes: nothing
            ("gp", 1, "b", ("", ""), "current"),  # org 1 through the membership
            ("up", 1, "a", ("DDoc", "3"), "expired"),
        ],
    )
    assert not oracle_holds(world, 1, "a", ("org", "2"))
    assert not oracle_holds(world, 1, "a", ("org", "1"))
    assert not oracle_holds(world, 1, "a", ("DDoc", "3"))
    assert oracle_holds(world, 1, "b", ("org", "1"))
    assert not oracle_holds(world, 1, "b", None)
    assert not oracle_holds(world, 2, "b", ("org", "1"))
