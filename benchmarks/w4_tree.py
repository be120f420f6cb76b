"""W4: a recursive hierarchy (shared/BENCHMARKS.md).

Data (fixed draw order):

* seed 21, for each folder ``i`` of 20,000 in order: folder 0, and any folder with
  ``random() < 0.01``, is a root (depth 1); otherwise its parent is ``choice(eligible)``, the
  earlier folders of depth < 10 in creation order (so the forest is at most 10 deep);
* seed 22, for each of 200,000 documents in order: ``folder = randrange(20000)``;
* seed 23, 2,000 distinct folder grants: ``(randrange(1000), randrange(20000))`` (user, folder),
  drawn until 2,000 distinct pairs exist;
* seed 24, for each of the checks: ``user = randrange(1000)``; with ``random() < 0.5`` (and the
  user holding a grant) start at ``choice(sorted(user's granted folders))`` and step down to a
  ``choice(children)`` while ``random() < 0.7`` (and there are children), then take a
  ``choice(documents of that folder)`` (``randrange(200000)`` when it has none); otherwise
  ``randrange(200000)``;
* seed 25, the list users: ``sample(range(1000), 100)``.

A user reads a document when they hold a grant on its folder or on an ancestor of it. The grants
are stored twice, with the same rows: in a plain ``w4_folder_grants (user_id, folder_id)`` table
(the shape the hand-written CTE reads) and as bastion stored grants (permission ``folder.read``
scoped to the folder: ``holds(g, "folder.read", on_target=True)``).

bastion's policies (``doc.read`` deferred to the document's folder)::

    policy.defer(
        "doc.read", attributes="folder", bearer=W4User, target=W4Document, to="folder.read"
    )
    # "grant table", the same rows as the reference (the target's row):
    policy.allow(
        "folder.read",
        subject=W4User,
        target=Folder,
        when=ancestors(target.parent, subject.folder_grants.any(it.folder_id == target.id)),
    )
    # "stored grants" (three tiers, scopes, validity windows):
    policy.allow(
        "folder.read",
        subject=W4User,
        target=Folder,
        when=ancestors(target.parent, holds(g, "folder.read", on_target=True)),
    )
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from _bastion_policy import bastion_status
from _common import (
    Section,
    SqlCounter,
    Timings,
    analyze,
    explain,
    fmt_ratio,
    fmt_time,
    insert_rows,
    md_table,
    round_robin,
)

N_FOLDERS = 20_000
N_DOCS = 200_000
N_USERS = 1_000
N_GRANTS = 2_000
MAX_DEPTH = 10
ROOT_P = 0.01
#: seconds an engine's warm-up pass over the list users may take before it is cut short
LIST_BUDGET = 1.0


class W4Base(DeclarativeBase):
    pass


class W4User(W4Base):
    __tablename__ = "w4_users"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    folder_grants: Mapped[list[FolderGrant]] = relationship(viewonly=True)

    def __repr__(self) -> str:
        return f"W4User({self.id})"


class Folder(W4Base):
    __tablename__ = "w4_folders"
    __table_args__ = (sa.Index("ix_w4_folders_parent_id_id", "parent_id", "id"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("w4_folders.id"))
    parent: Mapped[Folder | None] = relationship(remote_side=[id], viewonly=True)

    def __repr__(self) -> str:
        return f"Folder({self.id})"


class W4Document(W4Base):
    __tablename__ = "w4_documents"
    __table_args__ = (sa.Index("ix_w4_documents_folder_id_id", "folder_id", "id"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    folder_id: Mapped[int] = mapped_column(sa.ForeignKey("w4_folders.id"))
    folder: Mapped[Folder] = relationship(viewonly=True)

    def __repr__(self) -> str:
        return f"W4Document({self.id})"


class FolderGrant(W4Base):
    __tablename__ = "w4_folder_grants"
    __table_args__ = (sa.Index("ix_w4_folder_grants_folder_id", "folder_id", "user_id"),)

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("w4_users.id"), primary_key=True)
    folder_id: Mapped[int] = mapped_column(sa.ForeignKey("w4_folders.id"), primary_key=True)


_GRANTS: list[Any] = []


def grant_models() -> Any:
    """bastion's stored-grant tables on W4's base (built once, on first use)."""
    if not _GRANTS:
        from bastion.grants import grant_models as build

        models = build(W4Base, prefix="w4_bastion_")
        models.register_user(W4User)
        _GRANTS.append(models)
    return _GRANTS[0]


# --------------------------------------------------------------------------- data


@dataclass
class Tree:
    parent: list[int | None]
    depth: list[int]
    doc_folder: list[int]
    grants: list[tuple[int, int]]  # (user, folder), in draw order
    children: list[list[int]] = field(default_factory=list)
    docs_in: list[list[int]] = field(default_factory=list)
    grants_of: list[set[int]] = field(default_factory=list)

    def readable(self, user: int, doc: int) -> bool:
        held = self.grants_of[user]
        f: int | None = self.doc_folder[doc]
        while f is not None:
            if f in held:
                return True
            f = self.parent[f]
        return False

    def readable_docs(self, user: int) -> list[int]:
        folders: set[int] = set()
        stack = list(self.grants_of[user])
        while stack:
            f = stack.pop()
            if f not in folders:
                folders.add(f)
                stack.extend(self.children[f])
        return sorted(d for f in folders for d in self.docs_in[f])


def make_tree() -> Tree:
    rng = random.Random(21)
    parent: list[int | None] = []
    depth: list[int] = []
    eligible: list[int] = []
    for i in range(N_FOLDERS):
        if i == 0 or rng.random() < ROOT_P:
            p, d = None, 1
        else:
            p = rng.choice(eligible)
            d = depth[p] + 1
        parent.append(p)
        depth.append(d)
        if d < MAX_DEPTH:
            eligible.append(i)
    rng = random.Random(22)
    doc_folder = [rng.randrange(N_FOLDERS) for _ in range(N_DOCS)]
    rng = random.Random(23)
    seen: set[tuple[int, int]] = set()
    grants: list[tuple[int, int]] = []
    while len(grants) < N_GRANTS:
        pair = (rng.randrange(N_USERS), rng.randrange(N_FOLDERS))
        if pair not in seen:
            seen.add(pair)
            grants.append(pair)
    tree = Tree(parent, depth, doc_folder, grants)
    tree.children = [[] for _ in range(N_FOLDERS)]
    for i, p in enumerate(parent):
        if p is not None:
            tree.children[p].append(i)
    tree.docs_in = [[] for _ in range(N_FOLDERS)]
    for d, f in enumerate(doc_folder):
        tree.docs_in[f].append(d)
    tree.grants_of = [set() for _ in range(N_USERS)]
    for u, f in grants:
        tree.grants_of[u].add(f)
    return tree


def make_checks(tree: Tree, n: int) -> list[tuple[int, int]]:
    rng = random.Random(24)
    out = []
    for _ in range(n):
        u = rng.randrange(N_USERS)
        if rng.random() < 0.5 and tree.grants_of[u]:
            f = rng.choice(sorted(tree.grants_of[u]))
            while tree.children[f] and rng.random() < 0.7:
                f = rng.choice(tree.children[f])
            d = rng.choice(tree.docs_in[f]) if tree.docs_in[f] else rng.randrange(N_DOCS)
        else:
            d = rng.randrange(N_DOCS)
        out.append((u, d))
    return out


def list_users() -> list[int]:
    return random.Random(25).sample(range(N_USERS), 100)


def load(engine: sa.Engine, tree: Tree) -> float:
    """Schema (with bastion's grant tables), rows, ANALYZE; seconds."""
    t0 = time.perf_counter()
    with_grants = bastion_status() is None
    if with_grants:
        models = grant_models()
    W4Base.metadata.drop_all(engine)
    W4Base.metadata.create_all(engine)
    tables: list[tuple[str, Sequence[str], Any]] = [
        ("w4_users", ["id"], [(u,) for u in range(N_USERS)]),
        ("w4_folders", ["id", "parent_id"], list(enumerate(tree.parent))),
        ("w4_documents", ["id", "folder_id"], list(enumerate(tree.doc_folder))),
        ("w4_folder_grants", ["user_id", "folder_id"], tree.grants),
    ]
    if with_grants:
        links = models.links_for(W4User)
        tables += [
            (models.Permission.__table__.name, ["id", "token"], [(1, "folder.read")]),
            (
                links.permissions.name,
                ["user_id", "permission_id", "scope_type", "scope_id"],
                [(u, 1, "Folder", str(f)) for u, f in tree.grants],
            ),
        ]
    insert_rows(engine, tables)
    analyze(engine)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- references


def hw_cte_stmt(uid: int) -> sa.Select[tuple[int]]:
    """The hand-written recursive CTE: folders granted to the user, then their descendants."""
    g = FolderGrant.__table__
    f = Folder.__table__
    d = W4Document.__table__
    readable = sa.select(g.c.folder_id.label("id")).where(g.c.user_id == uid).cte(recursive=True)
    readable = readable.union(sa.select(f.c.id).where(f.c.parent_id == readable.c.id))
    # A join, not ``folder_id IN (SELECT ...)``: with IN, PostgreSQL 15 hashes the CTE and scans
    # all 200,000 documents (~50 ms here); the join walks the folder index (the CTE's rows are
    # distinct: UNION).
    return sa.select(d.c.id).join_from(readable, d, d.c.folder_id == readable.c.id)


def py_walk(user: W4User, doc: W4Document) -> bool:
    """The plain-Python parent walk over loaded objects (the check reference)."""
    grants = user.folder_grants
    folder = doc.folder
    while folder is not None:
        fid = folder.id
        for g in grants:
            if g.folder_id == fid:
                return True
        folder = folder.parent
    return False


def bastion_policies() -> dict[str, Any]:
    """The two policies, by the name of the folder rule's shape."""
    from bastion import Policy, ancestors, it, subject, target
    from bastion.grants import holds

    shapes = {
        "grant table": ancestors(
            target.parent, subject.folder_grants.any(it.folder_id == target.id)
        ),
        "stored grants": ancestors(
            target.parent, holds(grant_models(), "folder.read", on_target=True)
        ),
    }
    out = {}
    for name, rule in shapes.items():
        policy = Policy(["doc.read", "folder.read"])
        policy.allow("folder.read", subject=W4User, target=Folder, when=rule, name=name)
        policy.defer(
            "doc.read", attributes="folder", bearer=W4User, target=W4Document, to="folder.read"
        )
        out[name] = policy
    return out


# --------------------------------------------------------------------------- list


Query = Callable[[Session, W4User], Sequence[Any]]


@dataclass
class ListEngine:
    name: str
    query: Query
    build: Callable[[W4User], Any]
    n_users: int = 100  # lowered by the warm-up pass for a slow engine (see LIST_BUDGET)
    samples: dict[int, list[float]] = field(default_factory=dict)
    answers: dict[int, list[int]] = field(default_factory=dict)


def _list_engines(session: Session) -> list[ListEngine]:
    def hw(s: Session, u: W4User) -> Sequence[Any]:
        return s.execute(hw_cte_stmt(u.id)).scalars().all()

    engines = [ListEngine("hw_cte (reference)", hw, lambda u: hw_cte_stmt(u.id))]
    if bastion_status() is None:
        from bastion import Authorizer

        base = sa.select(W4Document.id)
        for shape, policy in bastion_policies().items():
            authz = Authorizer(policy, session)

            def build(u: W4User, authz: Any = authz) -> Any:
                return authz.filter(u, "doc.read", base)

            def query(s: Session, u: W4User, build: Any = build) -> Sequence[Any]:
                return s.execute(build(u)).scalars().all()

            engines.append(ListEngine(f"bastion `filter` ({shape})", query, build))
    return engines


def run_list(engine: sa.Engine, tree: Tree, label: str, rounds: int) -> Section:
    t_start = time.perf_counter()
    session = Session(engine)
    uids = list_users()
    by_id = {u.id: u for u in session.scalars(sa.select(W4User).where(W4User.id.in_(uids)))}
    users = [by_id[u] for u in uids]
    engines = _list_engines(session)

    def run_one(e: ListEngine) -> None:
        warm_up = not e.answers
        cut = e is not engines[0]  # the reference always answers every user
        spent = 0.0
        for i, user in enumerate(users[: e.n_users]):
            t0 = time.perf_counter()
            out = e.query(session, user)
            elapsed = time.perf_counter() - t0
            if warm_up:
                e.answers[i] = sorted(out)
                spent += elapsed
                if cut and spent > LIST_BUDGET and i + 1 >= 3:
                    e.n_users = i + 1  # a slow engine: time it on the first users only
                    break
            else:
                e.samples.setdefault(i, []).append(elapsed)

    print(f"W4 list {label}: {len(engines)} engines x {rounds} rounds ...", flush=True)
    round_robin(engines, rounds, run_one)
    problems = []
    expected = {i: tree.readable_docs(u) for i, u in enumerate(uids)}
    for e in engines:
        bad = [i for i in e.answers if e.answers[i] != expected[i]]
        if bad:
            i = bad[0]
            problems.append(
                f"W4 {label} {e.name}: {len(bad)} of {len(uids)} users differ from the tree "
                f"walk (first: user {uids[i]}: {len(e.answers[i])} rows vs {len(expected[i])})"
            )
    ref = engines[0]
    rows = []
    mean_rows = statistics.mean(len(v) for v in expected.values())
    for e in engines:
        med = _median(e)
        rows.append(
            [
                e.name,
                str(e.n_users),
                fmt_time(med),
                fmt_ratio(med / _median(ref, e.n_users)),
                "**DIFFERS**" if any(f" {e.name}:" in p for p in problems) else "ok",
            ]
        )
    text = [
        f"## W4 recursive hierarchy, list: {label}",
        "",
        f"Ids of the documents each of 100 users (seed 25) may read: {mean_rows:,.0f} rows on "
        f"average (max {max(len(v) for v in expected.values()):,}). Median per query over "
        f"{rounds} interleaved rounds (after one warm-up pass); every answer is also compared "
        "with a Python walk down the generated tree. An engine whose warm-up pass exceeds "
        f"{LIST_BUDGET:.0f} s is timed on the first users only ('users timed'; its ratio is to "
        "hw_cte on the same users). Target: bastion ≤ 1.5× hw_cte.",
        "",
        md_table(["query", "users timed", "median per query", "ratio to hw_cte", "answers"], rows),
    ]
    plans = _plans(engine, engines, users[0])
    if plans:
        text += ["", *plans]
    session.close()
    text += ["", f"W4 list {label} measured in {time.perf_counter() - t_start:.0f} s."]
    print("\n".join(text), flush=True)
    summary = []
    for e in engines[1:]:
        ratio = _median(e) / _median(ref, e.n_users)
        target = "≤ 1.5×" if "grant table" in e.name else "(≤ 1.5×)"
        summary.append((f"W4 {label}: {e.name} / hw_cte", fmt_ratio(ratio), target))
    return Section("\n".join(text), problems, summary)


def _median(e: ListEngine, only: int | None = None) -> float:
    keys = sorted(e.samples)[:only] if only else sorted(e.samples)
    return statistics.median(x for k in keys for x in e.samples[k])


def _plans(engine: sa.Engine, engines: list[ListEngine], user: W4User) -> list[str]:
    """The SQL and the database's plan of each list query, for one user."""
    out = [
        "<details><summary>SQL and plans (first list user)</summary>",
        "",
    ]
    for e in engines:
        stmt = e.build(user)
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        try:
            plan = explain(engine, stmt)
        except Exception as exc:  # noqa: BLE001 - a plan is informative only
            plan = f"(EXPLAIN failed: {exc})"
        out += [f"{e.name}:", "", "```sql", sql, "```", "", "```", plan, "```", ""]
    out.append("</details>")
    return out


# --------------------------------------------------------------------------- check


@dataclass
class CheckEngine:
    name: str
    check: Callable[[W4User, W4Document], Any]


def run_check(engine: sa.Engine, tree: Tree, n_checks: int, rounds: int) -> Section:
    """Checks on loaded objects: users with ``folder_grants``, every folder with ``parent``, and
    the checked documents with ``folder`` in memory (no SQL during a timed pass)."""
    t_start = time.perf_counter()
    pairs = make_checks(tree, n_checks)
    session = Session(engine)
    from sqlalchemy.orm import selectinload

    users = session.scalars(
        sa.select(W4User).options(selectinload(W4User.folder_grants)).order_by(W4User.id)
    ).all()
    folders = session.scalars(sa.select(Folder).order_by(Folder.id)).all()
    for f in folders:
        f.parent  # noqa: B018 - many-to-one from the identity map: no SQL
    wanted = sorted({d for _, d in pairs})
    docs: dict[int, W4Document] = {}
    for i in range(0, len(wanted), 5000):
        chunk = wanted[i : i + 5000]
        docs.update(
            (d.id, d)
            for d in session.scalars(sa.select(W4Document).where(W4Document.id.in_(chunk)))
        )
    for d in docs.values():
        d.folder  # noqa: B018
    checks = [(users[u], docs[d]) for u, d in pairs]
    engines = [CheckEngine("Python parent walk (reference)", py_walk)]
    if bastion_status() is None:
        from bastion import Authorizer

        for shape, policy in bastion_policies().items():
            authz = Authorizer(policy, session)
            engines.append(
                CheckEngine(
                    f"bastion `check` ({shape})",
                    lambda u, d, chk=authz.check: chk(u, "doc.read", d),
                )
            )
    expected = [tree.readable(u, d) for u, d in pairs]
    timings = Timings()
    answers: dict[str, list[bool]] = {}
    sql_during: dict[str, int] = {}

    def run_one(e: CheckEngine) -> None:
        check = e.check
        with SqlCounter(engine) as counter:
            t0 = time.perf_counter()
            out = [check(u, d) for u, d in checks]
            elapsed = time.perf_counter() - t0
        timings.add(e.name, elapsed / len(checks))
        if e.name in answers:  # the warm-up pass loads the stored grants: not counted
            sql_during[e.name] = max(sql_during.get(e.name, 0), counter.count)
        answers.setdefault(e.name, [bool(x) for x in out])

    print(f"W4 check: {len(engines)} engines x {rounds} rounds ...", flush=True)
    round_robin(engines, rounds, run_one)
    session.close()
    problems = []
    for e in engines:
        bad = [i for i, x in enumerate(answers[e.name]) if x != expected[i]]
        if bad:
            u, d = pairs[bad[0]]
            problems.append(
                f"W4 check {e.name}: {len(bad)} of {len(pairs)} answers differ from the tree walk "
                f"(first: user {u} doc {d}: got {answers[e.name][bad[0]]})"
            )
    ref = timings.median(engines[0].name)
    rows = [
        [
            e.name,
            fmt_time(timings.median(e.name)),
            fmt_ratio(timings.median(e.name) / ref),
            str(sql_during.get(e.name, 0)),
            "**DIFFERS**" if any(f" {e.name}:" in p for p in problems) else "ok",
        ]
        for e in engines
    ]
    depths = [tree.depth[tree.doc_folder[d]] for _, d in pairs]
    text = [
        "## W4 recursive hierarchy, check on loaded objects",
        "",
        f"{len(pairs):,} checks (seed 24), {sum(expected) / len(expected):.1%} allowed, the "
        f"document's folder at depth {statistics.mean(depths):.1f} on average (max "
        f"{max(depths)}; {sum(1 for d in tree.depth if d == MAX_DEPTH):,} of 20,000 folders at "
        f"depth {MAX_DEPTH}). Median per check over {rounds} interleaved rounds (after one "
        "warm-up round, which also loads each user's stored grants once); 'SQL run' counts the "
        "statements of the timed passes (0 = in memory). Target: bastion ≤ 5× the Python walk.",
        "",
        md_table(["engine", "median per check", "ratio to walk", "SQL run", "answers"], rows),
        "",
        "- The 'grant table' policy reads the same loaded rows as the walk "
        "(`subject.folder_grants`); the 'stored grants' one looks each ancestor up in the "
        "user's effective grants (cached in the session after the first check).",
        "",
        f"W4 check measured in {time.perf_counter() - t_start:.0f} s.",
    ]
    print("\n".join(text), flush=True)
    summary = [
        (f"W4 check: {e.name} / Python walk", fmt_ratio(timings.median(e.name) / ref), "≤ 5×")
        for e in engines[1:]
    ]
    return Section("\n".join(text), problems, summary)


def describe(tree: Tree) -> str:
    roots = sum(1 for p in tree.parent if p is None)
    by_depth = statistics.mean(tree.depth)
    return f"{roots} roots, mean folder depth {by_depth:.1f}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    from _common import scratch_dir, sqlite_url

    tree = make_tree()
    print(describe(tree))
    with scratch_dir() as tmp:
        eng = sa.create_engine(sqlite_url(tmp / "w4.sqlite"))
        print(f"loaded in {load(eng, tree):.1f} s")
        print(run_check(eng, tree, 20_000, 3).summary)
        print(run_list(eng, tree, "SQLite", 3).summary)
