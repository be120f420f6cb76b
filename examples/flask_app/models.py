"""The example's models, policy and data: organisations, their members, and documents.

=====  ===============  =====  ======  ======  ===========================================
doc    title            owner  org     public  who may read / edit / delete
=====  ===============  =====  ======  ======  ===========================================
1      acme roadmap     bob    acme    no      ada bob / ada bob / ada
2      bob's notes      bob    --      no      bob / bob / --
3      globex budget    eve    globex  no      eve dan / eve / eve
4      press release    eve    globex  yes     everyone / eve / eve
=====  ===============  =====  ======  ======  ===========================================

The policy uses the three ways to grant, combined:

* **rules**: a public document is readable; the owner reads and edits;
* **roles** in code: a member's role in the document's organisation (``viewer``, ``editor``,
  ``admin``) grants what the role holds (ada is admin of acme, bob viewer of acme, eve admin
  of globex);
* **stored grants** in the database (``bastion.grants``): dan may read globex's documents (a
  grant scoped to that organisation) and, through the group ``auditors``, read the grants'
  audit log (``grants.audit``); ada holds ``reports.view``, which staff (eve) have by a rule.

The models import no web framework: ``User`` has the four members Flask-Login reads.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from bastion import Policy, Role, RolePolicy, it, subject, target
from bastion.grants import GrantStore, grant_models, holds

__all__ = [
    "Base",
    "Document",
    "Membership",
    "Organisation",
    "User",
    "grants",
    "org_roles",
    "policy",
    "seed",
]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
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
    role: Mapped[str] = mapped_column(sa.String(10))  # a role of org_roles
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


#: the stored grants' tables, on this app's base
grants = grant_models(Base)
grants.register_user(User)

#: a member's role in an organisation, declared in code
org_roles = RolePolicy(
    [
        Role("viewer", ["doc.read"]),
        Role("editor", ["doc.read", "doc.edit"]),
        Role("admin", ["doc.read", "doc.edit", "doc.delete"]),
    ],
    name="organisation roles",
)


def role_in_org_grants(permission: str) -> object:
    """The subject's role in the document's organisation holds ``permission``."""
    return subject.memberships.any(
        (it.org_id == target.org_id) & org_roles.grants(it.role, permission)
    )


policy = Policy(
    ["doc.read", "doc.edit", "doc.delete", "reports.view", "grants.audit"], name="flask-example"
)
policy.allow(
    "doc.read",
    subject=User,
    target=Document,
    when=target.is_public
    | (target.owner == subject)
    | role_in_org_grants("doc.read")
    | holds(grants, "doc.read", scope=("org", target.org_id)),
    name="public, own, by role, or granted in its organisation",
)
policy.allow(
    "doc.edit",
    subject=User,
    target=Document,
    when=(target.owner == subject) | role_in_org_grants("doc.edit"),
    name="own, or by role",
)
policy.allow(
    "doc.delete", subject=User, target=Document, when=role_in_org_grants("doc.delete"), name="role"
)
policy.allow(
    "reports.view",
    subject=User,
    when=subject.is_staff | holds(grants, "reports.view"),
    name="staff, or granted",
)
policy.allow("grants.audit", subject=User, when=holds(grants, "grants.audit"), name="granted")


def seed(session: Session) -> None:
    """The data of the table above, into an empty database (committed)."""
    ada, bob, eve, dan = (
        User(id=n, name=name, is_staff=name == "eve")
        for n, name in enumerate(("ada", "bob", "eve", "dan"), start=1)
    )
    acme, globex = Organisation(id=1, name="acme"), Organisation(id=2, name="globex")
    session.add_all([ada, bob, eve, dan, acme, globex])
    session.flush()
    session.add_all(
        [
            Membership(user_id=ada.id, org_id=acme.id, role="admin"),
            Membership(user_id=bob.id, org_id=acme.id, role="viewer"),
            Membership(user_id=eve.id, org_id=globex.id, role="admin"),
            Document(id=1, title="acme roadmap", owner_id=bob.id, org_id=acme.id),
            Document(id=2, title="bob's notes", owner_id=bob.id),
            Document(id=3, title="globex budget", owner_id=eve.id, org_id=globex.id),
            Document(
                id=4, title="press release", owner_id=eve.id, org_id=globex.id, is_public=True
            ),
        ]
    )
    session.commit()
    store = GrantStore(session, grants, actor="seed")
    for token in ("doc.read", "reports.view", "grants.audit"):
        store.create_permission(token)
    store.create_group("auditors")
    store.grant("auditors", permission="grants.audit", reason="auditors read the audit log")
    store.add_member("auditors", dan)
    store.grant(dan, permission="doc.read", scope=("org", globex.id), reason="globex audit")
    store.grant(ada, permission="reports.view", reason="quarterly reports")
    session.commit()  # the store's changes ran in SAVEPOINTs of the session's transaction
