"""The schema of the differential suite, on its own ``DeclarativeBase``.

Every column except the primary keys and the discriminators is nullable, so that the generated
data is full of NULLs. ``User`` also carries plain Python properties (not mapped) that rules read
as subject collections, e.g. ``target.org_id.in_(subject.org_ids)``, or as role names
(``roles.grants(subject.role_names, ..., many=True)``).

Both ``users`` and ``documents`` use single-table inheritance with a ``kind`` discriminator
(``Admin(User)``; ``Receipt(Invoice(Document))``), so that rule lookup along the target's and the
bearer's class hierarchies is exercised on every path.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """The registry of this schema only (no other test module's tables)."""


document_tags = sa.Table(
    "document_tags",
    Base.metadata,
    sa.Column("document_id", sa.ForeignKey("documents.id"), primary_key=True),
    sa.Column("tag_id", sa.ForeignKey("tags.id"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str | None]
    level: Mapped[int | None]
    is_admin: Mapped[bool | None]
    #: the discriminator: ``"user"`` or ``"admin"`` (never NULL)
    kind: Mapped[str] = mapped_column(default="user")

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "user"}

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")
    documents: Mapped[list[Document]] = relationship(back_populates="owner")

    @property
    def org_ids(self) -> list[int]:
        """The ids of the orgs the user is a member of (reads ``memberships``)."""
        return [m.org_id for m in self.memberships]

    @property
    def near_levels(self) -> list[int | None]:
        """``[level, 1]``: holds a NULL when ``level`` is NULL."""
        return [self.level, 1]

    @property
    def levels_or_none(self) -> list[int] | None:
        """``None`` (a NULL collection) when ``level`` is NULL, else ``0 .. level``."""
        return None if self.level is None else list(range(self.level + 1))

    @property
    def role_names(self) -> list[str | None]:
        """The roles of the user's memberships (NULLs included), one per membership."""
        return [m.role for m in self.memberships]

    @property
    def name_or_none(self) -> list[str] | None:
        """``None`` (a NULL collection) when ``name`` is NULL, else ``[name]``."""
        return None if self.name is None else [self.name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id})"


class Admin(User):
    __mapper_args__ = {"polymorphic_identity": "admin"}


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    plan: Mapped[str | None]
    tier: Mapped[int | None]

    memberships: Mapped[list[Membership]] = relationship(back_populates="org")
    documents: Mapped[list[Document]] = relationship(back_populates="org")


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("orgs.id"), primary_key=True)
    role: Mapped[str | None]

    user: Mapped[User] = relationship(back_populates="memberships")
    org: Mapped[Org] = relationship(back_populates="memberships")


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    org_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orgs.id"))
    is_public: Mapped[bool | None]
    status: Mapped[str | None]
    level: Mapped[int | None]
    #: a tree (folders): cycles are possible in the generated data
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("documents.id"))
    #: the discriminator: ``"document"``, ``"invoice"`` or ``"receipt"`` (never NULL)
    kind: Mapped[str] = mapped_column(default="document")

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "document"}

    owner: Mapped[User | None] = relationship(back_populates="documents")
    org: Mapped[Org | None] = relationship(back_populates="documents")
    tags: Mapped[list[Tag]] = relationship(secondary=document_tags, back_populates="documents")
    parent: Mapped[Document | None] = relationship(
        back_populates="children", remote_side=lambda: [Document.id]
    )
    children: Mapped[list[Document]] = relationship(back_populates="parent")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id})"


class Invoice(Document):
    __mapper_args__ = {"polymorphic_identity": "invoice"}


class Receipt(Invoice):
    __mapper_args__ = {"polymorphic_identity": "receipt"}


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str | None]

    documents: Mapped[list[Document]] = relationship(secondary=document_tags, back_populates="tags")


#: Tables in an order that satisfies the foreign keys when inserting (reverse it to delete).
TABLES: tuple[sa.Table, ...] = tuple(Base.metadata.sorted_tables)
DOCUMENTS: sa.Table = Base.metadata.tables["documents"]
