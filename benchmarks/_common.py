"""Shared pieces of the benchmark suite: models, data, databases, timing, tables.

The data follows ``shared/BENCHMARKS.md`` (W2/W3) exactly; ids are the generator's indexes
(user ``u`` has id ``u``, document ``d`` has id ``d``), so the seeded samples name rows directly.

Draw order (fixed, so every engine and every run sees the same rows):

* seed 11, for each user ``u`` in order: ``k = randint(1, 3)``, ``orgs = sample(range(1000), k)``,
  then one ``random() < 0.10`` per org in sample order (``admin`` else ``member``);
* seed 12, for each document in order: ``owner = randrange(10000)``, ``org = choice(owner's orgs)``,
  ``is_public = random() < 0.01``;
* seed 13, for each check: ``user = randrange(10000)``, ``read if random() < 0.5 else edit``, then
  ``random() < 0.25`` -> ``choice(owned)``; else ``random() < 0.60`` -> ``choice(docs of
  choice(user's orgs))``; else ``randrange(n_docs)``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

N_USERS = 10_000
N_ORGS = 1_000
ADMIN_P = 0.10
PUBLIC_P = 0.01

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


# --------------------------------------------------------------------------- models


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    memberships: Mapped[list[Membership]] = relationship(lazy="select")

    def __repr__(self) -> str:
        return f"User({self.id})"


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    # Only for the peers' "relationship" policies (doc.org.memberships).
    memberships: Mapped[list[Membership]] = relationship(viewonly=True)

    def __repr__(self) -> str:
        return f"Org({self.id})"


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id"), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(16))

    def __repr__(self) -> str:
        return f"Membership({self.user_id}, {self.org_id}, {self.role!r})"


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        sa.Index("ix_documents_owner_id_id", "owner_id", "id"),
        sa.Index("ix_documents_org_id_id", "org_id", "id"),
        sa.Index("ix_documents_is_public_id", "is_public", "id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id"))
    is_public: Mapped[bool] = mapped_column(sa.Boolean)
    # Only for the peers' "relationship" policies (doc.org.memberships).
    org: Mapped[Org] = relationship(viewonly=True)

    def __repr__(self) -> str:
        return f"Document({self.id})"


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """W2's data: memberships (seed 11) and ``n_docs`` documents (seed 12)."""

    n_docs: int
    user_orgs: list[list[int]]
    user_roles: list[list[str]]
    doc_owner: list[int]
    doc_org: list[int]
    doc_public: list[bool]
    owned: list[list[int]] = field(default_factory=list)
    in_org: list[list[int]] = field(default_factory=list)

    def membership_rows(self) -> Iterator[tuple[int, int, str]]:
        for u, (orgs, roles) in enumerate(zip(self.user_orgs, self.user_roles, strict=True)):
            for org, role in zip(orgs, roles, strict=True):
                yield u, org, role

    def document_rows(self) -> Iterator[tuple[int, int, int, bool]]:
        return zip(range(self.n_docs), self.doc_owner, self.doc_org, self.doc_public, strict=True)


def make_dataset(n_docs: int) -> Dataset:
    rng = random.Random(11)
    user_orgs: list[list[int]] = []
    user_roles: list[list[str]] = []
    for _ in range(N_USERS):
        orgs = rng.sample(range(N_ORGS), rng.randint(1, 3))
        user_orgs.append(orgs)
        user_roles.append(["admin" if rng.random() < ADMIN_P else "member" for _ in orgs])
    rng = random.Random(12)
    owners: list[int] = []
    orgs_of_doc: list[int] = []
    public: list[bool] = []
    for _ in range(n_docs):
        owner = rng.randrange(N_USERS)
        owners.append(owner)
        orgs_of_doc.append(rng.choice(user_orgs[owner]))
        public.append(rng.random() < PUBLIC_P)
    ds = Dataset(n_docs, user_orgs, user_roles, owners, orgs_of_doc, public)
    ds.owned = [[] for _ in range(N_USERS)]
    ds.in_org = [[] for _ in range(N_ORGS)]
    for d, (owner, org) in enumerate(zip(owners, orgs_of_doc, strict=True)):
        ds.owned[owner].append(d)
        ds.in_org[org].append(d)
    return ds


def make_checks(ds: Dataset, n: int = 100_000) -> list[tuple[int, str, int]]:
    """W2's check mix (seed 13): ``(user, action, document)`` index triples."""
    rng = random.Random(13)
    out: list[tuple[int, str, int]] = []
    for _ in range(n):
        u = rng.randrange(N_USERS)
        action = "read" if rng.random() < 0.5 else "edit"
        if rng.random() < 0.25 and ds.owned[u]:
            d = rng.choice(ds.owned[u])
        elif rng.random() < 0.60:
            d = rng.choice(ds.in_org[rng.choice(ds.user_orgs[u])])
        else:
            d = rng.randrange(ds.n_docs)
        out.append((u, action, d))
    return out


def w3_users() -> list[int]:
    return random.Random(14).sample(range(N_USERS), 100)


# --------------------------------------------------------------------------- databases


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def load_dataset(engine: sa.Engine, ds: Dataset) -> float:
    """Create the schema, bulk-load ``ds`` and ANALYZE (PostgreSQL: VACUUM ANALYZE); seconds."""
    t0 = time.perf_counter()
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    users = [(u,) for u in range(N_USERS)]
    orgs = [(o,) for o in range(N_ORGS)]
    if engine.dialect.name == "postgresql":
        _load_postgres(engine, users, orgs, ds)
    else:
        _load_generic(engine, users, orgs, ds)
    # PostgreSQL: VACUUM too, so that the visibility map is set as autovacuum would leave it in
    # steady state (otherwise every index-only scan fetches heap pages after a bulk load).
    maintenance = "VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(maintenance)
    return time.perf_counter() - t0


def _load_generic(engine: sa.Engine, users: list, orgs: list, ds: Dataset) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        cur.executemany("INSERT INTO users (id) VALUES (?)", users)
        cur.executemany("INSERT INTO orgs (id) VALUES (?)", orgs)
        cur.executemany(
            "INSERT INTO memberships (user_id, org_id, role) VALUES (?, ?, ?)",
            list(ds.membership_rows()),
        )
        cur.executemany(
            "INSERT INTO documents (id, owner_id, org_id, is_public) VALUES (?, ?, ?, ?)",
            ds.document_rows(),
        )


def _load_postgres(engine: sa.Engine, users: list, orgs: list, ds: Dataset) -> None:
    tables: list[tuple[str, Any]] = [
        ("users (id)", users),
        ("orgs (id)", orgs),
        ("memberships (user_id, org_id, role)", ds.membership_rows()),
        ("documents (id, owner_id, org_id, is_public)", ds.document_rows()),
    ]
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            for target, rows in tables:
                with cur.copy(f"COPY {target} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)


def insert_rows(engine: sa.Engine, tables: Sequence[tuple[str, Sequence[str], Any]]) -> None:
    """Bulk-load ``(table, columns, rows)`` in one transaction: COPY on PostgreSQL, the driver's
    ``executemany`` elsewhere (SQLite with ``synchronous=OFF``)."""
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cur:
                for table, columns, rows in tables:
                    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            return
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        cur = raw.cursor()
        for table, columns, rows in tables:
            marks = ", ".join("?" for _ in columns)
            cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def analyze(engine: sa.Engine) -> None:
    """ANALYZE (PostgreSQL: VACUUM ANALYZE, so index-only scans see a set visibility map)."""
    maintenance = "VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(maintenance)


def explain(engine: sa.Engine, stmt: Any) -> str:
    """The database's plan for ``stmt`` (literal parameters): EXPLAIN QUERY PLAN on SQLite."""
    compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + str(compiled)).all()
    if engine.dialect.name == "sqlite":
        return "\n".join(f"{row[0]:>3} {row[1]:>3} {row[3]}" for row in rows)
    return "\n".join(str(row[0]) for row in rows)


@contextlib.contextmanager
def temporary_postgres() -> Iterator[Any]:
    """The project's TemporaryPostgres, else the private starter in ``_pg.py``.

    ``BASTION_BENCH_PG_URL`` (a server URL whose user may CREATE DATABASE) skips starting one.
    """
    url = os.environ.get("BASTION_BENCH_PG_URL")
    if url:
        from _pg import ExistingPostgres

        yield ExistingPostgres(url)
        return
    try:
        from bastion.testing.postgres import TemporaryPostgres
    except Exception as exc:  # noqa: BLE001 - any import problem means "use ours"
        print(f"  (bastion.testing.postgres unavailable: {exc!r}; using benchmarks/_pg.py)")
        from _pg import TemporaryPostgres
    with TemporaryPostgres() as pg:
        yield pg


def postgres_version(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SHOW server_version").scalar())


# --------------------------------------------------------------------------- timing


@dataclass
class Section:
    """One workload's result: Markdown, disagreements, and (what, measured, target) lines."""

    markdown: str
    problems: list[str] = field(default_factory=list)
    summary: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Timings:
    """Per-engine samples (seconds per operation), gathered round-robin."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])


def round_robin(
    engines: Sequence[Any], rounds: int, run_one: Callable[[Any], None], *, warmup: bool = True
) -> None:
    """Run ``run_one(engine)`` for every engine, ``rounds`` times, rotating the order.

    The garbage collector is collected before and disabled during each engine's turn. What exists
    after the warm-up (the data, loaded ORM objects) is frozen out of those collections
    (``gc.freeze``): walking hundreds of thousands of live objects before every turn only cost
    time on a busy machine.
    """
    order = list(engines)
    if warmup:
        for engine in order:
            run_one(engine)
    gc.collect()
    gc.freeze()
    try:
        for r in range(rounds):
            k = r % len(order)
            for engine in order[k:] + order[:k]:
                gc.collect()
                gc.disable()
                try:
                    run_one(engine)
                finally:
                    gc.enable()
    finally:
        gc.unfreeze()


def fmt_time(seconds: float) -> str:
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.1f} µs"
    ms = us / 1000
    if ms < 100:
        return f"{ms:.2f} ms"
    return f"{ms:.0f} ms"


def fmt_ratio(x: float) -> str:
    if x < 10:
        return f"{x:.2f}×"
    if x < 100:
        return f"{x:.1f}×"
    return f"{x:,.0f}×"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    align = ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- environment


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    rev = out.stdout.strip() or "no commit"
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return rev + (" + uncommitted changes in src/" if dirty else "")


def environment_lines(pg_version: str | None) -> list[str]:
    dists = [
        "bastion",
        "SQLAlchemy",
        "psycopg",
        "pycasbin",
        "oso",
        "sqlalchemy-oso",
        "sqla-authz",
        "cadurso",
    ]
    return [
        f"- Date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {_cpu_model()}, {os.cpu_count()} cores, {_mem_total()} RAM, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.implementation.name}), "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {pg_version or 'not run'}",
        f"- Load average (1/5/15 min) when the tables were written: {_loadavg()} "
        "(other work on the machine inflates absolute times; ratios are interleaved)",
        f"- bastion git revision: {_git_rev()}",
        "- Versions: " + ", ".join(f"{d} {_version(d)}" for d in dists),
    ]


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class SqlCounter:
    """Counts statements sent by an engine (to prove a check ran without SQL)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        self.engine = engine

    def _on_execute(self, *args: object) -> None:
        self.count += 1

    def __enter__(self) -> SqlCounter:
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)
