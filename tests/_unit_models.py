"""Mapped classes shared by the unit tests (imported as ``_unit_models``; tests/ is on sys.path).

The schema covers every relationship shape the rule compilers handle:

* ``Document.owner`` / ``Document.org``: many-to-one (``has``); ``Document.owner_id`` is mapped
  from a column with another name (``owner_user_id``);
* ``Document.comments``: one-to-many (``any``);
* ``Document.tags``: many-to-many through the ``document_tags`` table;
* ``User.memberships``: one-to-many from the subject; ``Org.members``: many-to-many through
  ``memberships`` (view only);
* ``Invoice(Document)`` and ``Admin(User)``: single-table inheritance, for MRO lookups.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


document_tags = sa.Table(
    "document_tags",
    Base.metadata,
    sa.Column("document_id", sa.ForeignKey("documents.id"), primary_key=True),
    sa.Column("tag_id", sa.ForeignKey("tags.id"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    is_admin: Mapped[bool | None]
    clearance: Mapped[int | None]
    kind: Mapped[str] = mapped_column(sa.String(20), default="user")
    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "user"}

    @property
    def org_ids(self) -> list[int]:
        """The subject collection used by ``target.org_id.in_(subject.org_ids)``."""
        return [m.org_id for m in self.memberships]

    def __repr__(self) -> str:
        return f"<User {self.id}>"


class Admin(User):
    __mapper_args__ = {"polymorphic_identity": "admin"}


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    plan: Mapped[str | None] = mapped_column(sa.String(20))
    members: Mapped[list[User]] = relationship(secondary="memberships", viewonly=True)


class Membership(Base):
    __tablename__ = "memberships"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id"))
    role: Mapped[str | None] = mapped_column(sa.String(20))
    user: Mapped[User] = relationship(back_populates="memberships")
    org: Mapped[Org] = relationship()


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200), default="")
    status: Mapped[str | None] = mapped_column(sa.String(200))
    is_public: Mapped[bool | None]
    level: Mapped[int | None]
    # mapped under another attribute name than its column: rules must read ``owner_id``
    owner_id: Mapped[int | None] = mapped_column("owner_user_id", sa.ForeignKey("users.id"))
    org_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orgs.id"))
    kind: Mapped[str] = mapped_column(sa.String(20), default="document")

    owner: Mapped[User | None] = relationship()
    org: Mapped[Org | None] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary=document_tags)
    comments: Mapped[list[Comment]] = relationship(back_populates="document")

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "document"}

    @property
    def display_title(self) -> str:
        """A Python property: no SQL form, so rules may not read it."""
        return self.title.title()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"


class Invoice(Document):
    __mapper_args__ = {"polymorphic_identity": "invoice"}


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(sa.ForeignKey("documents.id"))
    body: Mapped[str] = mapped_column(sa.String(200), default="")
    document: Mapped[Document] = relationship(back_populates="comments")


class Measure(Base):
    __tablename__ = "measures"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Float)


class Unmapped:
    """A plain class: not a valid rule target."""

    id = 1


@dataclasses.dataclass
class Principal:
    """An unmapped subject (e.g. a token's claims): its values are bound as parameters."""

    id: int | None = None
    is_admin: bool | None = False
    clearance: int | None = None
    org_ids: tuple[int, ...] = ()


def populate(session: Session) -> dict[str, Any]:
    """A small data set with NULLs in every nullable column; returns the objects by name.

    Nullable columns have no defaults, so a None written here is a NULL in the database."""
    acme, globex = Org(id=1, name="acme", plan="pro"), Org(id=2, name="globex", plan=None)
    alice = User(id=1, name="alice", is_admin=False, clearance=3)
    bob = User(id=2, name="bob", is_admin=False, clearance=None)
    root = Admin(id=3, name="root", is_admin=True, clearance=9)
    urgent, misc = Tag(id=1, name="urgent"), Tag(id=2, name="misc")
    docs = [
        Document(id=1, title="a1", status="draft", is_public=False, level=1, owner_id=1, org_id=1),
        Document(id=2, title="a2", status="review", is_public=True, level=5, owner_id=1),
        Document(id=3, title="b1", status=None, is_public=None, level=None, owner_id=2, org_id=2),
        Document(id=4, title="x1", status="final", is_public=False, level=2, org_id=1),
        Invoice(id=5, title="inv", status="draft", is_public=False, level=7, owner_id=2, org_id=1),
    ]
    docs[0].tags = [urgent]
    docs[2].tags = [urgent, misc]
    docs[3].comments = [Comment(id=1, body="hello")]
    session.add_all([acme, globex, alice, bob, root, urgent, misc, *docs])
    session.add_all(
        [
            Membership(id=1, user_id=1, org_id=1, role="admin"),
            Membership(id=2, user_id=2, org_id=1, role="member"),
            Membership(id=3, user_id=2, org_id=2, role=None),
        ]
    )
    session.commit()
    return {
        "acme": acme,
        "globex": globex,
        "alice": alice,
        "bob": bob,
        "root": root,
        "docs": docs,
    }
