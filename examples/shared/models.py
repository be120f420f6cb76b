"""The examples' tables: users, organisations, memberships, documents, and the stored grants.

No web framework is imported here. ``User`` carries what each app needs to know who is calling:
the four members Flask-Login reads (its ``UserMixin``, written out) and an ``api_key`` column for
the FastAPI app's ``X-API-Key`` header.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bastion.grants import grant_models

__all__ = ["Base", "Document", "Membership", "Organisation", "User", "grants"]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
    api_key: Mapped[str] = mapped_column(sa.String(50), unique=True)
    is_staff: Mapped[bool] = mapped_column(default=False)
    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    # What Flask-Login needs of a user (its UserMixin, without importing Flask here).
    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)

    def __repr__(self) -> str:
        return f"<User {self.name}>"


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("organisations.id"), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(10))  # a role of policy.org_roles
    user: Mapped[User] = relationship(back_populates="memberships")
    org: Mapped[Organisation] = relationship()


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text, default="")
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    org_id: Mapped[int | None] = mapped_column(sa.ForeignKey("organisations.id"), index=True)
    is_public: Mapped[bool] = mapped_column(default=False)
    owner: Mapped[User] = relationship()
    org: Mapped[Organisation | None] = relationship()

    def __repr__(self) -> str:
        return f"<Document {self.title!r}>"


#: the stored grants' tables (``bastion.grants``), on the examples' base
grants = grant_models(Base)
grants.register_user(User)
