"""The example app behind ``make demo``: organisations, members and documents.

It builds a SQLite file, declares a small policy, then prints checks with their answers, a
filtered list with the SQL that ran, and a denied action with its error.
"""

from __future__ import annotations

import os
from typing import TextIO

import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from bastion import Authorizer, NotAuthorized, Policy, it, subject, target

__all__ = ["Document", "Membership", "Org", "User", "build_policy", "run_demo"]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    is_staff: Mapped[bool] = mapped_column(default=False)
    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    def __repr__(self) -> str:
        return f"<User {self.name}>"


class Org(Base):
    __tablename__ = "orgs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id"), primary_key=True)
    role: Mapped[str]  # "admin" or "member"
    user: Mapped[User] = relationship(back_populates="memberships")
    org: Mapped[Org] = relationship()


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    org_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orgs.id"), index=True)
    is_public: Mapped[bool] = mapped_column(default=False, index=True)
    owner: Mapped[User] = relationship()
    org: Mapped[Org | None] = relationship()

    def __repr__(self) -> str:
        return f"<Document {self.title!r}>"


def build_policy() -> Policy:
    """The demo's policy: read public/own/org documents; edit own or as org admin."""
    policy = Policy(["doc.read", "doc.edit", "reports.view"], name="demo")
    policy.allow(
        "doc.read",
        subject=User,
        target=Document,
        when=target.is_public
        | (target.owner == subject)
        | subject.memberships.any(it.org_id == target.org_id),
        name="public, own, or in my org",
    )
    policy.allow(
        "doc.edit",
        subject=User,
        target=Document,
        when=(target.owner == subject)
        | subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin")),
        name="own, or admin of its org",
    )
    policy.allow("reports.view", subject=User, when=subject.is_staff, name="staff")
    return policy


def _seed(session: Session) -> None:
    ada, bob, eve = User(id=1, name="ada"), User(id=2, name="bob"), User(id=3, name="eve")
    acme, globex = Org(id=1, name="acme"), Org(id=2, name="globex")
    session.add_all([ada, bob, eve, acme, globex])
    session.add_all(
        [
            Membership(user=ada, org=acme, role="admin"),
            Membership(user=bob, org=acme, role="member"),
            Membership(user=eve, org=globex, role="admin"),
            Document(id=1, title="acme roadmap", owner=bob, org=acme),
            Document(id=2, title="bob's notes", owner=bob),
            Document(id=3, title="globex budget", owner=eve, org=globex),
            Document(id=4, title="press release", owner=eve, org=globex, is_public=True),
        ]
    )
    eve.is_staff = True


def run_demo(path: str, out: TextIO) -> int:
    """Recreate the SQLite file at ``path``, run the walkthrough, print to ``out``."""
    if os.path.exists(path):
        os.remove(path)
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        _seed(session)
        session.commit()

    policy = build_policy()
    print(f"bastion demo on {path}\n\n{policy}", file=out)
    for rule in policy.rules():
        print(f"  {rule}", file=out)

    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with Session(engine) as session:
        authz = Authorizer(policy, session)
        users = session.scalars(
            sa.select(User).options(selectinload(User.memberships)).order_by(User.id)
        ).all()
        docs = session.scalars(sa.select(Document).order_by(Document.id)).all()

        print("\n1. Checks on loaded objects (answered in Python, no SQL):", file=out)
        statements.clear()
        for user in users:
            for doc in docs:
                answers = [
                    f"{perm.split('.')[1]}={'yes' if authz.check(user, perm, doc) else 'no '}"
                    for perm in ("doc.read", "doc.edit")
                ]
                print(f"  {user.name:<4} {doc.title!r:<18} {'  '.join(answers)}", file=out)
        print(f"  statements sent to the database: {len(statements)}", file=out)

        print("\n2. A permission without an object:", file=out)
        for user in users:
            print(f"  {user.name} reports.view: {authz.check(user, 'reports.view')}", file=out)

        print("\n3. The documents bob may read, filtered in SQL:", file=out)
        bob = users[1]
        statements.clear()
        stmt = authz.filter(bob, "doc.read", sa.select(Document).order_by(Document.id))
        titles = [d.title for d in session.scalars(stmt)]
        print(f"  {titles}\n  SQL:", file=out)
        for line in statements[-1].splitlines():
            print(f"    {line}", file=out)

        print("\n4. A check on an object that is not loaded: one SELECT EXISTS:", file=out)
        session.expire_all()
        statements.clear()
        allowed = authz.check(bob, "doc.edit", session.get(Document, 3))
        print(f"  bob doc.edit 'globex budget': {allowed}", file=out)
        print(f"  SQL: {' '.join(statements[-1].split())}", file=out)

        print("\n5. A denied action:", file=out)
        try:
            authz.authorize(bob, "doc.edit", session.get(Document, 3))
        except NotAuthorized as exc:
            print(f"  NotAuthorized: {exc}", file=out)
    engine.dispose()
    return 0
