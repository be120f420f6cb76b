"""The example app behind ``make demo``: organisations, members, documents and folders.

It builds a SQLite file, declares one policy that uses the three ways to grant (rules over
subject and target, static roles in code, stored grants in the database) and a folder tree, then
prints checks with their answers, a filtered list with the SQL that ran, a denied action with its
error, a grant that changes the answer (with its audit row), a tree filtered with a recursive
query, a whole page decided in one query, a reverse lookup and an explanation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
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

from bastion import (
    Authorizer,
    NotAuthorized,
    Policy,
    Role,
    RolePolicy,
    ancestors,
    it,
    subject,
    target,
)
from bastion.grants import GrantModels, GrantStore, grant_models, holds

__all__ = ["Document", "Folder", "Membership", "Org", "User", "build_policy", "run_demo"]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    role: Mapped[str | None]  # a static role, declared in code: "auditor", "manager" or none
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


class Folder(Base):
    __tablename__ = "folders"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("folders.id"), index=True)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    parent: Mapped[Folder | None] = relationship(remote_side=[id])


#: the stored-grant tables (permissions, bundles, groups, links, audit) on the demo's own base
GRANTS: GrantModels = grant_models(Base)
GRANTS.register_user(User)

#: static roles in code (balrog lineage): one role per user, read from ``users.role``
STAFF_ROLES = RolePolicy(
    [Role("auditor", ["reports.view"]), Role("manager", ["reports.view", "reports.export"])],
    name="staff",
)


def build_policy() -> Policy:
    """The demo's policy: read public/own/org documents; edit own or as org admin; either with
    the stored grant (``doc.read``, ``doc.edit``) in the document's org; reports by role;
    folders by ownership of the folder or of any folder above it."""
    policy = Policy(["doc.read", "doc.edit", "folder.read"], name="demo")
    policy.allow(
        "doc.read",
        subject=User,
        target=Document,
        when=target.is_public
        | (target.owner == subject)
        | subject.memberships.any(it.org_id == target.org_id)
        | holds(GRANTS, "doc.read", scope=("org", target.org_id)),
        name="public, own, in my org, or granted in its org",
    )
    policy.allow(
        "doc.edit",
        subject=User,
        target=Document,
        when=(target.owner == subject)
        | subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin"))
        | holds(GRANTS, "doc.edit", scope=("org", target.org_id)),
        name="own, admin of its org, or granted in its org",
    )
    STAFF_ROLES.register(policy, subject=User, role=subject.role)
    policy.allow(
        "folder.read",
        subject=User,
        target=Folder,
        when=ancestors(target.parent, target.owner_id == subject.id),
        name="owner of the folder or of one above",
    )
    return policy


def _seed(session: Session) -> None:
    ada = User(id=1, name="ada", role="manager")
    bob = User(id=2, name="bob")
    eve = User(id=3, name="eve", role="auditor")
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
            # a tree: projects <- acme <- roadmaps (bob owns "acme"), archive on its own
            Folder(id=1, name="projects", owner_id=1),
            Folder(id=2, name="acme", parent_id=1, owner_id=2),
            Folder(id=3, name="roadmaps", parent_id=2),
            Folder(id=4, name="archive", owner_id=3),
        ]
    )


def run_demo(path: str, out: TextIO) -> int:
    """Recreate the SQLite file at ``path``, run the walkthrough, print to ``out``."""
    if os.path.exists(path):
        os.remove(path)
    # (a URL object: a path with ``?`` or ``#`` in it was read as a URL's query)
    engine = sa.create_engine(sa.engine.URL.create("sqlite", database=str(path)))
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

        print("\n1. Checks on loaded objects, answered in Python. The only SQL is for", file=out)
        print("   stored grants: a user's first check asks one EXISTS, the second loads", file=out)
        print("   the user's grants once for the session; later checks are set lookups:", file=out)
        statements.clear()
        for user in users:
            for doc in docs:
                answers = [
                    f"{perm.split('.')[1]}={'yes' if authz.check(user, perm, doc) else 'no '}"
                    for perm in ("doc.read", "doc.edit")
                ]
                print(f"  {user.name:<4} {doc.title!r:<18} {'  '.join(answers)}", file=out)
        print(f"  statements sent to the database: {len(statements)}", file=out)

        print("\n2. Permissions without an object, from static roles in code:", file=out)
        for user in users:
            held = {p: authz.check(user, p) for p in ("reports.view", "reports.export")}
            print(f"  {user.name:<4} role={user.role!s:<8} {held}", file=out)

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
        sql = " ".join(statements[-1].split())
        print(f"  SQL ({len(sql)} characters): {sql[:300]} ...", file=out)

        print("\n5. A denied action:", file=out)
        try:
            authz.authorize(bob, "doc.edit", session.get(Document, 3))
        except NotAuthorized as exc:
            print(f"  NotAuthorized: {exc}", file=out)
            print(_indent(str(exc.explanation)), file=out)

        _grants_walkthrough(session, authz, bob, out)
        _tree_walkthrough(session, authz, users, statements, out)
        _page_walkthrough(session, authz, bob, statements, out)
    engine.dispose()
    return 0


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _grants_walkthrough(session: Session, authz: Authorizer, bob: User, out: TextIO) -> None:
    print(
        "\n6. A stored grant changes the answer at once (group -> bundle -> permission):", file=out
    )
    store = GrantStore(session, GRANTS, actor="demo admin")
    store.create_permission("doc.read", "read documents")
    store.create_permission("doc.edit", "edit documents")
    store.create_bundle("editing", ["doc.read", "doc.edit"])
    store.create_group("globex helpers")
    store.grant("globex helpers", bundle="editing", scope=("org", 2))
    next_week = datetime.now(timezone.utc) + timedelta(days=7)
    store.add_member("globex helpers", bob, expires_at=next_week, reason="cover for eve")
    session.commit()
    budget = session.get(Document, 3)
    print(f"  bob doc.edit 'globex budget': {authz.check(bob, 'doc.edit', budget)}", file=out)
    print(_indent(str(authz.explain(bob, "doc.edit", budget))), file=out)
    for token, scope, tier in store.effective_permissions(bob):
        print(f"  bob holds {token!r} in {scope} through {tier!r}", file=out)
    for row in reversed(store.audit_log(2)):
        why = f" ({row.reason})" if row.reason else ""
        print(f"  audit: {row.actor}: {row.action} {row.subject} -> {row.object}{why}", file=out)
    who = session.scalars(authz.who_can("doc.edit", budget).order_by(User.id))
    print(f"  who may edit 'globex budget': {[u.name for u in who]}", file=out)


def _tree_walkthrough(
    session: Session, authz: Authorizer, users: Sequence[User], statements: list[str], out: TextIO
) -> None:
    print("\n7. Folders bob may read (his own, and every folder below it):", file=out)
    bob = users[1]
    statements.clear()
    stmt = authz.filter(bob, "folder.read", sa.select(Folder).order_by(Folder.id))
    print(f"  {[f.name for f in session.scalars(stmt)]}\n  SQL:", file=out)
    print(_indent(statements[-1]), file=out)


def _page_walkthrough(
    session: Session, authz: Authorizer, bob: User, statements: list[str], out: TextIO
) -> None:
    print("\n8. A whole page of unloaded documents, every action, in one query:", file=out)
    docs = session.scalars(sa.select(Document).order_by(Document.id)).all()
    titles = {doc.id: doc.title for doc in docs}
    session.expire_all()  # nothing the rules read is loaded any more
    statements.clear()
    actions = authz.allowed_actions(bob, list(docs), ["doc.read", "doc.edit"])
    sent = len(statements)
    for key, title in titles.items():
        print(f"  bob on {title!r:<18} {sorted(map(str, actions[key]))}", file=out)
    print(f"  statements sent to the database: {sent}", file=out)
