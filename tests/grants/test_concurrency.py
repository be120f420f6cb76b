"""Concurrency on PostgreSQL: 8 threads, each with its own Session, grant, revoke and check the
same rows (the same users, permissions, group and scopes) for about 3 seconds.

Half of the threads let the store run each change in its own transaction (the session has no
transaction open when the store is called); the other half make 1-4 changes in one transaction
of their own, in random order, and commit, so their row locks can be taken in opposite orders.

Afterwards (a fresh session, after every thread committed): no duplicate and no orphan link rows,
one audit row per committed change, and every check (Python, SQL, filter) agrees with the link
tables read directly.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bastion import Authorizer
from bastion.grants import RETRIES, GrantConflict, GrantStore

from .schema import Document, User, allowed, create_permissions, grants, policy, world

THREADS = 8
SECONDS = 3.0
USERS = (1, 2, 3)
PERMISSIONS = ("doc.read", "doc.edit")
SCOPES = (None, ("org", 1), ("org", 2))
LINKS = grants.users[User]


def _change(store: GrantStore, session: Session, rnd: random.Random) -> Callable[[], None]:
    """One random change of the shared rows (the user is loaded first, the call made later)."""
    who = session.get(User, rnd.choice(USERS))
    permission, scope = rnd.choice(PERMISSIONS), rnd.choice(SCOPES)
    expires = rnd.choice([None, None, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)])
    return rnd.choice(
        [
            lambda: store.grant(who, permission=permission, scope=scope, expires_at=expires),
            lambda: store.revoke(who, permission=permission, scope=scope),
            lambda: store.add_member("staff", who, scope=scope, expires_at=expires),
            lambda: store.remove_member("staff", who, scope=scope),
            lambda: store.grant("staff", permission=permission, scope=scope, expires_at=expires),
            lambda: store.revoke("staff", permission=permission, scope=scope),
        ]
    )


def _check(authz: Authorizer, session: Session, rnd: random.Random) -> None:
    who = session.get(User, rnd.choice(USERS))
    permission = rnd.choice(["doc.read", "doc.edit"])
    doc = session.get(Document, rnd.randint(1, 7))
    if rnd.random() < 0.5:
        session.expire(doc)  # the SQL path
    authz.check(who, permission, doc)
    session.scalars(authz.filter(who, permission, sa.select(Document.id))).all()


class Worker(threading.Thread):
    def __init__(self, engine: Engine, n: int, deadline: float) -> None:
        super().__init__(name=f"grants-worker-{n}")
        self.engine, self.deadline = engine, deadline
        self.rnd = random.Random(n)
        self.batches = n % 2 == 1  # odd threads: several changes per transaction
        self.committed = 0  #: changes committed (one audit row each)
        self.checks = 0
        self.conflicts: list[GrantConflict] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with Session(self.engine) as session:
                store = GrantStore(session, grants, actor=self.name)
                authz = Authorizer(policy, session)
                while time.monotonic() < self.deadline:
                    self._round(session, store, authz)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.errors.append(error)

    def _round(self, session: Session, store: GrantStore, authz: Authorizer) -> None:
        if self.rnd.random() < 0.3:
            _check(authz, session, self.rnd)
            self.checks += 1
            session.commit()
            return
        changes = self.rnd.randint(1, 4) if self.batches else 1
        try:
            for _ in range(changes):
                call = _change(store, session, self.rnd)
                if not self.batches:
                    session.commit()  # no transaction open: the store runs (and retries) its own
                    assert not session.in_transaction()
                call()
            session.commit()
            self.committed += changes
        except GrantConflict as conflict:
            # documented: the transaction was lost to a concurrent one; roll back and retry
            self.conflicts.append(conflict)
            session.rollback()


@pytest.mark.parametrize(
    ("isolation", "possible"),
    [
        ("READ COMMITTED", {"deadlock"}),  # PostgreSQL's default
        ("REPEATABLE READ", {"deadlock", "serialization failure"}),
    ],
)
@pytest.mark.backends("postgresql")
def test_concurrent_grants_revokes_and_checks(
    engine: Engine, isolation: str, possible: set[str]
) -> None:
    engine = engine.execution_options(isolation_level=isolation)
    with world(engine) as w:
        create_permissions(w.store)
        w.store.create_group("staff")
        w.session.commit()
        audit_before = w.counts()["bastion_audit"]

        deadline = time.monotonic() + SECONDS
        workers = [Worker(engine, n, deadline) for n in range(THREADS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=SECONDS + 60)
        assert not any(worker.is_alive() for worker in workers)
        errors = [e for worker in workers for e in worker.errors]
        assert errors == [], errors
        committed = sum(worker.committed for worker in workers)
        conflicts = Counter(c.reason for worker in workers for c in worker.conflicts)
        own = sum(len(worker.conflicts) for worker in workers if not worker.batches)
        checks = sum(worker.checks for worker in workers)
        print(
            f"{isolation}: {committed} changes committed, {checks} checks, "
            f"conflicts {dict(conflicts)} ({own} after {RETRIES} attempts in own transactions)"
        )
        assert committed > 50
        assert checks > 20
        assert set(conflicts) <= possible
        if isolation == "READ COMMITTED":  # one change per transaction: waits, never fails
            assert all(not worker.conflicts for worker in workers if not worker.batches)

        _assert_stored_state(w.engine, committed + audit_before)
        with Session(engine) as fresh:
            authz = Authorizer(policy, fresh)
            expected = _expected_from_link_tables(fresh)
            for user_id in USERS:
                for permission in ("doc.read", "doc.edit"):
                    got = allowed(authz, fresh.get(User, user_id), permission)
                    assert got == expected[user_id, permission], (user_id, permission)


def _assert_stored_state(engine: Engine, audit_rows: int) -> None:
    tables = [LINKS.permissions, LINKS.groups, grants.group_permissions]
    with engine.connect() as c:
        for table in tables:
            key = list(table.primary_key.columns)
            dupes = c.execute(sa.select(*key).group_by(*key).having(sa.func.count() > 1)).all()
            assert dupes == [], table.name
            for fk in table.foreign_keys:
                parent = fk.column
                orphans = c.scalar(
                    sa.select(sa.func.count())
                    .select_from(table.outerjoin(parent.table, fk.parent == parent))
                    .where(parent.is_(None))
                )
                assert orphans == 0, (table.name, str(fk.parent))
        assert c.scalar(sa.select(sa.func.count()).select_from(grants.audit)) == audit_rows


def _expected_from_link_tables(session: Session) -> dict[tuple[int, str], list[int]]:
    """The documents each user may read/edit, from the raw rows (no bastion code)."""
    now = session.scalar(sa.text("SELECT now() AT TIME ZONE 'utc'"))
    tokens = dict(session.execute(sa.select(grants.Permission.id, grants.Permission.token)).all())

    def valid(row: Any) -> bool:
        return (row.valid_from is None or row.valid_from <= now) and (
            row.expires_at is None or row.expires_at > now
        )

    held: set[tuple[int, str, tuple[str, str]]] = set()
    for row in session.execute(sa.select(LINKS.permissions)).all():
        if valid(row):
            held.add((row.user_id, tokens[row.permission_id], (row.scope_type, row.scope_id)))
    group_rows = [r for r in session.execute(sa.select(grants.group_permissions)).all() if valid(r)]
    for member in session.execute(sa.select(LINKS.groups)).all():
        if not valid(member):
            continue
        for gp in group_rows:
            scopes = {(member.scope_type, member.scope_id), (gp.scope_type, gp.scope_id)} - {
                ("", "")
            }
            if len(scopes) <= 1:
                held.add((member.user_id, tokens[gp.permission_id], next(iter(scopes), ("", ""))))
    docs = session.execute(sa.select(Document.id, Document.org_id, Document.owner_id)).all()
    expected: dict[tuple[int, str], list[int]] = {}
    for user_id in USERS:
        for token in ("doc.read", "doc.edit"):

            def has(org: int | None, token: str = token, user_id: int = user_id) -> bool:
                scopes = [("", "")] + ([("org", str(org))] if org is not None else [])
                return any((user_id, token, s) in held for s in scopes)

            expected[user_id, token] = sorted(
                d.id
                for d in docs
                if has(d.org_id) or (token == "doc.edit" and d.owner_id == user_id)
            )
    return expected


@pytest.mark.backends("postgresql")
def test_a_deadlock_inside_the_callers_transaction_is_a_grant_conflict(engine: Engine) -> None:
    """Two transactions change the same two rows in opposite orders: PostgreSQL aborts one of
    them, which the store reports as ``GrantConflict``; the other commits."""
    with world(engine) as w:
        create_permissions(w.store)
        w.session.commit()
    sessions = [Session(engine), Session(engine)]
    stores = [GrantStore(s, grants, actor=f"t{n}") for n, s in enumerate(sessions)]
    users = [[s.get(User, 1), s.get(User, 2)] for s in sessions]
    outcome: dict[int, BaseException | None] = {}
    second_step = threading.Barrier(2)

    def run(n: int) -> None:
        first, second = users[n] if n == 0 else users[n][::-1]
        try:
            stores[n].grant(first, permission="doc.read")
            second_step.wait(timeout=10)
            stores[n].grant(second, permission="doc.read")
            sessions[n].commit()
            outcome[n] = None
        except BaseException as error:  # noqa: BLE001 - inspected below
            outcome[n] = error
            sessions[n].rollback()

    threads = [threading.Thread(target=run, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for session in sessions:
        session.close()
    errors = [e for e in outcome.values() if e is not None]
    assert len(errors) == 1, outcome
    assert isinstance(errors[0], GrantConflict)
    assert errors[0].reason == "deadlock"
    assert errors[0].method == "grant"
    with Session(engine) as fresh:
        assert fresh.scalar(sa.select(sa.func.count()).select_from(LINKS.permissions)) == 2
