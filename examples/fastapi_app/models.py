"""The example's models and policy: organisations, their members, and documents.

=====  ===============  =====  ======  ======  ====================================
doc    title            owner  org     public  who may read / edit
=====  ===============  =====  ======  ======  ====================================
1      acme roadmap     bob    acme    no      ada bob / ada (acme admin) bob
2      bob's notes      bob    --      no      bob / bob
3      globex budget    eve    globex  no      eve / eve
4      press release    eve    globex  yes     everyone / eve
=====  ===============  =====  ======  ======  ====================================

ada is an admin of acme, bob a member of acme, eve an admin of globex and staff (``reports.view``);
dan belongs to no organisation. Each user's API key is ``<name>-key``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bastion import Policy, it, subject, target

__all__ = ["Base", "Document", "Membership", "Organisation", "User", "policy", "seed"]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    api_key: Mapped[str] = mapped_column(sa.String(50), unique=True)
    is_staff: Mapped[bool] = mapped_column(default=False)
    memberships: Mapped[list[Membership]] = relationship(back_populates="user")


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("organisations.id"), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(10))  # "admin" or "member"
    user: Mapped[User] = relationship(back_populates="memberships")


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    org_id: Mapped[int | None] = mapped_column(sa.ForeignKey("organisations.id"), index=True)
    is_public: Mapped[bool] = mapped_column(default=False)
    owner: Mapped[User] = relationship()


policy = Policy(["doc.read", "doc.edit", "reports.view"], name="fastapi-example")
policy.declare("doc.read", "doc.edit", who_can=True)  # who_can() must answer for these
policy.allow(
    "doc.read",
    subject=User,
    target=Document,
    when=target.is_public
    | (target.owner == subject)
    | subject.memberships.any(it.org_id == target.org_id),
    name="public, own, or in my organisation",
)
policy.allow(
    "doc.edit",
    subject=User,
    target=Document,
    when=(target.owner == subject)
    | subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin")),
    name="own, or admin of its organisation",
)
policy.allow("reports.view", subject=User, when=subject.is_staff, name="staff")


async def seed(session: AsyncSession) -> None:
    """The data of the table above (into an empty database)."""
    ada, bob, eve, dan = (
        User(id=n, name=name, api_key=f"{name}-key", is_staff=name == "eve")
        for n, name in enumerate(("ada", "bob", "eve", "dan"), start=1)
    )
    acme, globex = Organisation(id=1, name="acme"), Organisation(id=2, name="globex")
    session.add_all([ada, bob, eve, dan, acme, globex])
    await session.flush()
    session.add_all(
        [
            Membership(user_id=ada.id, org_id=acme.id, role="admin"),
            Membership(user_id=bob.id, org_id=acme.id, role="member"),
            Membership(user_id=eve.id, org_id=globex.id, role="admin"),
            Document(id=1, title="acme roadmap", owner_id=bob.id, org_id=acme.id),
            Document(id=2, title="bob's notes", owner_id=bob.id),
            Document(id=3, title="globex budget", owner_id=eve.id, org_id=globex.id),
            Document(
                id=4, title="press release", owner_id=eve.id, org_id=globex.id, is_public=True
            ),
        ]
    )
    await session.commit()
