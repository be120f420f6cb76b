"""W3: the list filter pushed into SQL (shared/BENCHMARKS.md).

"Ids of the documents user U may read" for 100 users (``random.Random(14).sample``), on one
database. Every engine builds its statement per call (as an application would) and runs it on
the same Session; the 100 users are loaded once beforehand with ``memberships`` selectin-loaded.
Answers (sorted id lists) are compared with ``hw_union``'s. Slow peers are timed on the first
users of the same sample; their ratio is to ``hw_union`` on those same users.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from _bastion_policy import bastion_authorizer, bastion_status
from _common import (
    Base,
    Dataset,
    Document,
    Membership,
    Org,
    Section,
    User,
    fmt_ratio,
    fmt_time,
    md_table,
    round_robin,
    w3_users,
)

Query = Callable[[Session, User], Sequence[Any]]
TRUE = sa.true()


# --------------------------------------------------------------------------- references


def hw_union_stmt(uid: int) -> sa.CompoundSelect[tuple[int]]:
    """Three indexed branches joined by UNION: public, owned, in one of the user's orgs."""
    orgs = sa.select(Membership.org_id).where(Membership.user_id == uid)
    return sa.union(
        sa.select(Document.id).where(Document.is_public == TRUE),
        sa.select(Document.id).where(Document.owner_id == uid),
        sa.select(Document.id).where(Document.org_id.in_(orgs)),
    )


def hw_union(session: Session, user: User) -> Sequence[Any]:
    return session.execute(hw_union_stmt(user.id)).scalars().all()


def hw_union_page(session: Session, user: User) -> Sequence[Any]:
    stmt = hw_union_stmt(user.id).order_by(sa.literal_column("id")).limit(50)
    return session.execute(stmt).scalars().all()


def hw_union_count(session: Session, user: User) -> Sequence[Any]:
    stmt = sa.select(sa.func.count()).select_from(hw_union_stmt(user.id).subquery())
    return [session.execute(stmt).scalar_one()]


def naive_or(session: Session, user: User) -> Sequence[Any]:
    orgs = sa.select(Membership.org_id).where(Membership.user_id == user.id)
    stmt = sa.select(Document.id).where(
        sa.or_(Document.is_public == TRUE, Document.owner_id == user.id, Document.org_id.in_(orgs))
    )
    return session.execute(stmt).scalars().all()


def load_all(session: Session, user: User) -> Sequence[Any]:
    cols = sa.select(Document.id, Document.owner_id, Document.org_id, Document.is_public)
    rows = session.execute(cols).all()
    uid = user.id
    orgs = {m.org_id for m in user.memberships}
    return [i for i, owner, org, public in rows if public or owner == uid or org in orgs]


# --------------------------------------------------------------------------- peers


OSO_LOADED = """
allow(_user: User, "read", doc: Document) if doc.is_public = true;
allow(user: User, "read", doc: Document) if doc.owner_id = user.id;
allow(user: User, "read", doc: Document) if
    m in user.memberships and doc.org_id = m.org_id;
"""

OSO_RELATIONSHIP = """
allow(_user: User, "read", doc: Document) if doc.is_public = true;
allow(user: User, "read", doc: Document) if doc.owner_id = user.id;
allow(user: User, "read", doc: Document) if
    m in doc.org.memberships and m.user_id = user.id;
"""


def sqlalchemy_oso(policy: str) -> Query:
    from oso import Oso
    from sqlalchemy_oso import register_models
    from sqlalchemy_oso.auth import authorize_model

    oso = Oso()
    register_models(oso, Base)
    oso.load_str(policy)

    def query(session: Session, user: User) -> Sequence[Any]:
        where = authorize_model(oso, user, "read", session, Document)
        return session.execute(sa.select(Document.id).where(where)).scalars().all()

    return query


def sqla_authz(relationship: bool) -> Query:
    from sqla_authz import PolicyRegistry, authorize_query

    registry = PolicyRegistry()

    def loaded(user: User) -> Any:
        orgs = [m.org_id for m in user.memberships]
        return (
            (Document.is_public == TRUE)
            | (Document.owner_id == user.id)
            | Document.org_id.in_(orgs)
        )

    def related(user: User) -> Any:
        via_org = Document.org.has(Org.memberships.any(Membership.user_id == user.id))
        return (Document.is_public == TRUE) | (Document.owner_id == user.id) | via_org

    fn = related if relationship else loaded
    registry.register(Document, "read", fn, name="read", description="")
    base = sa.select(Document.id)

    def query(session: Session, user: User) -> Sequence[Any]:
        stmt = authorize_query(base, actor=user, action="read", registry=registry)
        return session.execute(stmt).scalars().all()

    return query


def bastion_queries(session: Session) -> tuple[Query, Query, Query, Callable[[User], Any]]:
    authz = bastion_authorizer(session)
    base = sa.select(Document.id)

    def ids(session: Session, user: User) -> Sequence[Any]:
        return session.execute(authz.filter(user, "read", base)).scalars().all()

    def page(session: Session, user: User) -> Sequence[Any]:
        stmt = authz.filter(user, "read", base).order_by(Document.id).limit(50)
        return session.execute(stmt).scalars().all()

    def count(session: Session, user: User) -> Sequence[Any]:
        inner = authz.filter(user, "read", base).subquery()
        return [session.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one()]

    def build(user: User) -> Any:
        return authz.filter(user, "read", base)

    return ids, page, count, build


# --------------------------------------------------------------------------- run


@dataclass
class Engine:
    name: str
    query: Query
    n_users: int
    group: str = "ids"  # the reference of "ids" is hw_union; of "page"/"count" its own
    samples: dict[int, list[float]] = field(default_factory=dict)
    answers: dict[int, list[Any]] = field(default_factory=dict)


@dataclass
class Config:
    """Which peers run, on how many users, for one database size."""

    slow_users: int  # naive OR, relationship policies
    load_all_users: int  # 0 = skip (1M rows)
    rounds: int


def _engines(session: Session, n_docs: int, cfg: Config, notes: list[str]) -> list[Engine]:
    n = 100
    engines = [Engine("hw_union (reference)", hw_union, n)]
    pages = [
        Engine("hw_union first page (50 by id)", hw_union_page, n, "page"),
        Engine("hw_union count()", hw_union_count, n, "count"),
    ]
    status = bastion_status()
    if status is None:
        ids, page, count, _ = bastion_queries(session)
        engines.append(Engine("bastion `filter`", ids, n))
        pages.append(Engine("bastion first page (50 by id)", page, n, "page"))
        pages.append(Engine("bastion count()", count, n, "count"))
    else:
        notes.append(f"bastion not measured: `{status}`")
    peers: list[tuple[str, Callable[[], Query], int]] = [
        (
            "sqlalchemy-oso `authorize_model` (user.memberships loaded)",
            lambda: sqlalchemy_oso(OSO_LOADED),
            n,
        ),
        ("sqla-authz `authorize_query` (org ids from loaded user)", lambda: sqla_authz(False), n),
        ("naive `WHERE public OR owner OR org_id IN (subquery)`", lambda: naive_or, cfg.slow_users),
        (
            "sqlalchemy-oso `authorize_model` (doc.org.memberships)",
            lambda: sqlalchemy_oso(OSO_RELATIONSHIP),
            cfg.slow_users,
        ),
        (
            "sqla-authz `authorize_query` (relationship policy)",
            lambda: sqla_authz(True),
            cfg.slow_users,
        ),
    ]
    if cfg.load_all_users:
        peers.append(("load-all + Python filter", lambda: load_all, cfg.load_all_users))
    for name, factory, users in peers:
        try:
            engines.append(Engine(name, factory(), users))
        except Exception as exc:
            logging.exception("W3 peer %s failed to set up", name)
            notes.append(f"{name} not measured: `{type(exc).__name__}: {exc}`")
    return engines + pages


def _measure(session: Session, users: list[User], engines: list[Engine], rounds: int) -> None:
    def run_one(e: Engine) -> None:
        for i, user in enumerate(users[: e.n_users]):
            t0 = time.perf_counter()
            out = e.query(session, user)
            elapsed = time.perf_counter() - t0
            if i not in e.answers:  # the warm-up pass: keep the answer, time nothing
                e.answers[i] = sorted(out) if e.group == "ids" else list(out)
            else:
                e.samples.setdefault(i, []).append(elapsed)

    round_robin(engines, rounds, run_one)


def _construction_us(users: list[User], build: Callable[[User], Any], repeat: int = 7) -> float:
    """Median µs to build one filtered statement (no compile, no database)."""
    per_call = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(10):
            for user in users:
                build(user)
        per_call.append((time.perf_counter() - t0) / (10 * len(users)))
    return statistics.median(per_call) * 1e6


def _check(engines: list[Engine], label: str) -> list[str]:
    refs = {e.group: e for e in engines if e.name.startswith("hw_union")}
    problems = []
    for e in engines:
        ref = refs[e.group]
        bad = [i for i, got in e.answers.items() if got != ref.answers[i]]
        if bad:
            i = bad[0]
            got, want = set(e.answers[i]), set(ref.answers[i])
            problems.append(
                f"W3 {label} {e.name}: {len(bad)} of {len(e.answers)} users differ from hw_union "
                f"(first: user #{i}: {len(e.answers[i])} rows vs {len(ref.answers[i])}; "
                f"extra {sorted(got - want)[:5]}, missing {sorted(want - got)[:5]})"
            )
    return problems


def run(engine: sa.Engine, ds: Dataset, cfg: Config, label: str) -> Section:
    """W3 on one loaded database."""
    notes: list[str] = []
    t_start = time.perf_counter()
    session = Session(engine)
    uids = w3_users()
    stmt = sa.select(User).where(User.id.in_(uids)).options(selectinload(User.memberships))
    by_id = {u.id: u for u in session.scalars(stmt)}
    users = [by_id[u] for u in uids]
    engines = _engines(session, ds.n_docs, cfg, notes)
    print(f"W3 {label}: {len(engines)} engines x {cfg.rounds} rounds ...", flush=True)
    _measure(session, users, engines, cfg.rounds)
    construction = []
    if bastion_status() is None:
        construction.append(
            ("bastion `filter`", _construction_us(users, bastion_queries(session)[3]))
        )
    construction.append(
        ("hw_union (hand-built select)", _construction_us(users, lambda u: hw_union_stmt(u.id)))
    )
    session.close()
    problems = _check(engines, label)
    text = _render(engines, construction, problems, notes, label, cfg)
    text += f"\n\nW3 {label} measured in {time.perf_counter() - t_start:.0f} s."
    print(text, flush=True)
    return Section(text, problems, _summary(engines, construction, label))


def _summary(
    engines: list[Engine], construction: list[tuple[str, float]], label: str
) -> list[tuple[str, str, str]]:
    by_name = {e.name: e for e in engines}
    out = []
    for name, ref in [
        ("bastion `filter`", "hw_union (reference)"),
        ("bastion first page (50 by id)", "hw_union first page (50 by id)"),
        ("bastion count()", "hw_union count()"),
    ]:
        if name in by_name:
            ratio = _median(by_name[name]) / _median(by_name[ref])
            target = "≤ 1.25× (at 1M)" if name == "bastion `filter`" else ""
            out.append((f"W3 {label}: {name} / hw_union", fmt_ratio(ratio), target))
    for name, us in construction:
        if name.startswith("bastion"):
            out.append((f"W3 {label}: building bastion's filter", f"{us:.1f} µs", "≤ 100 µs"))
    return out


def _median(e: Engine, only: int | None = None) -> float:
    keys = sorted(e.samples)[:only] if only else sorted(e.samples)
    return statistics.median(x for k in keys for x in e.samples[k])


def _render(
    engines: list[Engine],
    construction: list[tuple[str, float]],
    problems: list[str],
    notes: list[str],
    label: str,
    cfg: Config,
) -> str:
    refs = {e.group: e for e in engines if e.name.startswith("hw_union")}
    rows = []
    for e in engines:
        med = _median(e)
        ratio = med / _median(refs[e.group], e.n_users)
        sizes = [len(a) for a in e.answers.values()] if e.group == "ids" else []
        rows.append(
            [
                e.name,
                str(e.n_users),
                fmt_time(med),
                fmt_ratio(ratio),
                f"{statistics.mean(sizes):,.0f}" if sizes else "",
                "**DIFFERS**" if any(f" {e.name}:" in p for p in problems) else "ok",
            ]
        )
    headers = [
        "query",
        "users timed",
        "median per query",
        "ratio to hw_union",
        "mean rows",
        "answers",
    ]
    build_rows = [[name, f"{us:.1f} µs"] for name, us in construction]
    text = [
        f"## W3 list filter in SQL: {label}",
        "",
        f"Median per query over {cfg.rounds} interleaved rounds (after one warm-up pass that "
        "collects the answers). Page and count rows compare with hw_union's page and count. "
        "Target: bastion ≤ 1.25× hw_union at 1M rows.",
        "",
        md_table(headers, rows),
        "",
        "Building the filtered statement (no compile, no database); target ≤ 100 µs:",
        "",
        md_table(["statement", "median per build"], build_rows),
    ]
    if notes:
        text += ["", *[f"- {n}" for n in notes]]
    return "\n".join(text)
