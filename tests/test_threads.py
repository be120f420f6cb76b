"""One policy, many threads: a web server's threads each with their own session and Authorizer,
sharing the policy's plans and their caches of built SQL (one entry per subject's values).

Regression: once a plan's cache was full, two threads evicting its oldest entry at the same
moment both dropped the same key, and the second raised ``KeyError`` out of ``check`` or
``filter``. The cache is made tiny here so that every call evicts, and the interpreter switches
threads as often as it can.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, load_only, mapped_column

import bastion.authorizer
from bastion import Authorizer, Policy, subject, target

THREADS = 8
CALLS = 1000
USERS = 1000
DOCS = 50


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "thread_users"
    id: Mapped[int] = mapped_column(primary_key=True)


class Doc(Base):
    __tablename__ = "thread_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None]


@pytest.fixture
def busy_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(bastion.authorizer, "_CACHE_SIZE", 4)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.backends("sqlite")
def test_threads_sharing_a_policy_evict_its_caches_without_errors(
    engine: sa.Engine, busy_threads: None
) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([User(id=i) for i in range(USERS)])
        session.add_all([Doc(id=i, owner_id=i % 7) for i in range(DOCS)])
        session.commit()
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Doc, when=target.owner_id == subject.id)
    failures: list[BaseException] = []
    wrong: list[tuple[int, int]] = []

    def work(n: int) -> None:
        with Session(engine) as session:
            authz = Authorizer(policy, session)
            docs = session.scalars(sa.select(Doc).options(load_only(Doc.id))).all()
            try:
                for call in range(CALLS):
                    user = User(id=(n * CALLS + call) % USERS)  # a new subject almost every call
                    doc = docs[call % DOCS]
                    if authz.check(user, "read", doc) != (doc.id % 7 == user.id):
                        wrong.append((user.id, doc.id))
                    authz.filter(user, "read", Doc)
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert not wrong, wrong[:5]


class _RacingDict(dict[int, str]):
    """A cache whose oldest entry another thread evicts just after this one looked it up."""

    def __iter__(self) -> Iterator[int]:
        keys = list(super().__iter__())
        if keys:
            super().__delitem__(keys[0])
        return iter(keys)


def test_an_eviction_that_lost_the_race_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race, made deterministic."""
    monkeypatch.setattr(bastion.authorizer, "_CACHE_SIZE", 3)
    cache = _RacingDict({1: "a", 2: "b", 3: "c"})
    bastion.authorizer._remember(cache, 4, "d")  # type: ignore[arg-type]
    assert cache[4] == "d"
    assert len(cache) <= 3
