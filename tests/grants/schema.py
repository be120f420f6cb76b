"""The schema of the grants tests, on two declarative bases of their own.

``Base`` (integer and string keys)

* ``User`` (integer ``id``) and ``ServiceAccount`` (string primary key ``name``): two user models,
  each with its own link tables;
* ``Document``: ``org_id`` (integer scope), ``team`` (string scope), ``space_id`` (UUID scope),
  ``owner_id`` (the owner, a ``User``); ``Invoice(Document)`` by single-table inheritance;
* ``Page``: a string primary key (object scope with a string id).

``UuidBase`` (UUID keys)

* ``Member``: a UUID primary key in the column ``member_uuid``, mapped as the attribute ``ident``
  (registered with ``register_user(Member, primary_key="ident")``);
* ``Folder``: a UUID primary key and a string ``tenant``.

:func:`build` creates every table and returns a :class:`World` with the grant models, a policy
whose rules use stored grants, and helpers to count rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from bastion import Authorizer, Policy, subject, target
from bastion.grants import GrantModels, GrantStore, grant_models, holds


class Base(DeclarativeBase):
    """Integer- and string-keyed models."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(100), default="")
    home_org: Mapped[int | None]

    def __repr__(self) -> str:
        return f"User({self.id})"


class ServiceAccount(Base):
    __tablename__ = "service_accounts"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)

    def __repr__(self) -> str:
        return f"ServiceAccount({self.name!r})"


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(sa.String(10), default="doc")
    org_id: Mapped[int | None]
    team: Mapped[str | None] = mapped_column(sa.String(3))  # short: a cast must not truncate
    space_id: Mapped[uuid.UUID | None]
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    owner: Mapped[User | None] = relationship()

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "doc"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id})"


class Invoice(Document):
    __mapper_args__ = {"polymorphic_identity": "invoice"}


class Page(Base):
    __tablename__ = "pages"

    slug: Mapped[str] = mapped_column(sa.String(50), primary_key=True)


class UuidBase(DeclarativeBase):
    """UUID-keyed models."""


class Member(UuidBase):
    __tablename__ = "members"

    ident: Mapped[uuid.UUID] = mapped_column("member_uuid", primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), default="")


class Folder(UuidBase):
    __tablename__ = "folders"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant: Mapped[str | None] = mapped_column(sa.String(40))


grants: GrantModels = grant_models(Base)
grants.register_user(User)
grants.register_user(ServiceAccount)
uuid_grants: GrantModels = grant_models(UuidBase, prefix="acl_")
uuid_grants.register_user(Member, primary_key="ident")

#: The space of documents 1, 3 and 7 (hex letters, so that case matters).
SPACE = uuid.UUID("a0000000-0000-0000-0000-0000000000f7")

#: Stored permission tokens used by the tests.
TOKENS = ("doc.read", "doc.edit", "doc.delete", "reports.view", "folder.open")

policy = Policy(
    [
        "doc.read",  # in the document's org
        "doc.edit",  # owner, or holds doc.edit in the document's org (rules + grants)
        "doc.delete",  # on the document itself
        "doc.team",  # doc.read in the document's team (a short string column)
        "doc.space",  # doc.read in the document's space (a UUID column)
        "doc.home",  # doc.read in the subject's home org (a subject attribute)
        "doc.ctx",  # doc.read in the org passed as ctx
        "reports.view",  # no target
        "page.edit",  # on the page itself (string primary key)
        "folder.open",  # on the folder (UUID primary key) or in its tenant
    ]
)


def _allow(permission: str, when: Any, *subjects: type, on: type | None = Document) -> None:
    for subject_type in subjects or (User,):
        policy.allow(permission, subject=subject_type, target=on, when=when)


def _register_policy() -> None:
    from bastion import ctx

    both = (User, ServiceAccount)
    _allow("doc.read", holds(grants, "doc.read", scope=("org", target.org_id)), *both)
    _allow(
        "doc.edit",
        (target.owner == subject) | holds(grants, "doc.edit", scope=("org", target.org_id)),
    )
    _allow("doc.delete", holds(grants, "doc.delete", on_target=True), *both)
    _allow("doc.team", holds(grants, "doc.read", scope=("team", target.team)))
    _allow("doc.space", holds(grants, "doc.read", scope=("space", target.space_id)))
    _allow("doc.home", holds(grants, "doc.read", scope=("org", subject.home_org)))
    _allow("doc.ctx", holds(grants, "doc.read", scope=("org", ctx.org)))
    _allow("reports.view", holds(grants, "reports.view"), *both, on=None)
    _allow("page.edit", holds(grants, "doc.edit", on_target=True), on=Page)
    policy.allow(
        "folder.open",
        subject=Member,
        target=Folder,
        when=holds(uuid_grants, "folder.open", on_target=True)
        | holds(uuid_grants, "folder.open", scope=("tenant", target.tenant)),
    )


_register_policy()


def create_all(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    UuidBase.metadata.create_all(engine)


@dataclass
class World:
    """A session on a fresh database with the schema, a store and an authorizer."""

    engine: Engine
    session: Session
    store: GrantStore
    authz: Authorizer

    def tables(self) -> list[sa.Table]:
        return [*Base.metadata.sorted_tables, *UuidBase.metadata.sorted_tables]

    def counts(self) -> dict[str, int]:
        """Rows per table, read on a separate connection (what is committed)."""
        with self.engine.connect() as connection:
            return {
                t.name: connection.scalar(sa.select(sa.func.count()).select_from(t)) or 0
                for t in self.tables()
            }

    def session_counts(self) -> dict[str, int]:
        """Rows per table as this session sees them (its own transaction included)."""
        return {
            t.name: self.session.scalar(sa.select(sa.func.count()).select_from(t)) or 0
            for t in self.tables()
        }

    def store_for(self, models: GrantModels, actor: str = "admin") -> GrantStore:
        return GrantStore(self.session, models, actor=actor)


def populate(session: Session) -> None:
    """Users 1-4, service accounts 'ci' and '1', documents 1-6 and an invoice 7, pages."""
    session.add_all([User(id=i, name=f"user{i}", home_org=(i % 3) or None) for i in (1, 2, 3, 4)])
    session.add_all([ServiceAccount(name="ci"), ServiceAccount(name="1")])
    space = SPACE
    session.add_all(
        [
            Document(id=1, org_id=1, team="red", space_id=space, owner_id=1),
            Document(id=2, org_id=1, team="blu", space_id=None, owner_id=2),
            Document(id=3, org_id=2, team=None, space_id=space, owner_id=None),
            Document(
                id=4,
                org_id=None,
                team="red",
                space_id=uuid.UUID("b0000000-0000-0000-0000-0000000000f8"),
                owner_id=3,
            ),
            Document(id=5, org_id=0, team="r", space_id=None, owner_id=None),
            Document(id=6, org_id=5, team="05", space_id=None, owner_id=4),
            Invoice(id=7, org_id=2, team="red", space_id=space, owner_id=2),
        ]
    )
    session.add_all([Page(slug="home"), Page(slug="about"), Page(slug="05")])
    session.commit()


@contextmanager
def world(engine: Engine) -> Iterator[World]:
    create_all(engine)
    with Session(engine) as session:
        populate(session)
        yield World(
            engine, session, GrantStore(session, grants, actor="admin"), Authorizer(policy, session)
        )


def create_permissions(store: GrantStore) -> None:
    for token in TOKENS:
        store.create_permission(token, f"may {token}")


@dataclass(frozen=True)
class Answers:
    """What each path says: the primary keys allowed, sorted."""

    python: list[Any]  #: check on loaded objects (Python, cached effective grants)
    expired: list[Any]  #: check on expired objects (SQL when the rule reads a column)
    database: list[Any]  #: Authorizer.check_in_database (always the SELECT EXISTS)
    filter: list[Any]  #: filter(select(pk))

    def agree(self) -> list[Any]:
        assert self.python == self.expired == self.database == self.filter, self
        return self.python


def answers(authz: Authorizer, who: Any, permission: str, cls: type, **context: Any) -> Answers:
    """Ask every path which objects of ``cls`` ``who`` may ``permission``."""
    session = authz.session
    mapper = sa.inspect(cls)
    key = mapper.get_property_by_column(mapper.primary_key[0]).key
    objects = session.scalars(sa.select(cls)).all()

    def allowed(check: Any) -> list[Any]:
        return sorted(getattr(o, key) for o in objects if check(o))

    python = allowed(lambda o: authz.check(who, permission, o, **context))
    ids = {id(o): getattr(o, key) for o in objects}
    for o in objects:
        session.expire(o)
    expired = sorted(ids[id(o)] for o in objects if authz.check(who, permission, o, **context))
    plan = authz.policy.plan(permission, type(who), cls)
    database = sorted(ids[id(o)] for o in objects if authz.check_in_database(plan, who, o, context))
    stmt = authz.filter(who, permission, sa.select(getattr(cls, key)), **context)
    found = sorted(session.scalars(stmt).all())
    return Answers(python, expired, database, found)


def allowed(
    authz: Authorizer, who: Any, permission: str, cls: type = Document, **ctx: Any
) -> list[Any]:
    """The objects every path allows (asserting that they agree)."""
    return answers(authz, who, permission, cls, **ctx).agree()
