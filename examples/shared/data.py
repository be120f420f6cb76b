"""The examples' data (the table in ``examples/shared/__init__.py``) and the queries both apps
run."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bastion.grants import GrantStore

from .models import Base, Document, Membership, Organisation, User, grants

__all__ = [
    "DEFAULT_SQLITE_FILE",
    "USER_NAMES",
    "api_key_of",
    "init_db",
    "is_empty",
    "org_document_counts",
    "seed",
]

#: the SQLite file both apps use unless ``DATABASE_URL`` says otherwise (in the working
#: directory): run one app, then the other, on the same data
DEFAULT_SQLITE_FILE = "examples.sqlite"

#: the example's users, in id order (ids 1 to 4)
USER_NAMES = ("ada", "bob", "eve", "dan")


def api_key_of(name: str) -> str:
    """The demo API key of user ``name`` (the FastAPI app's ``X-API-Key``)."""
    return f"{name}-key"


def seed(session: Session) -> None:
    """Fill an empty database with the example's data (committed). The FastAPI app runs it on
    an ``AsyncSession`` through ``run_sync``."""
    ada, bob, eve, dan = (
        User(id=n, name=name, api_key=api_key_of(name), is_staff=name == "eve")
        for n, name in enumerate(USER_NAMES, start=1)
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


def is_empty(session: Session) -> bool:
    """True if the database has no users yet."""
    return not session.scalar(sa.select(sa.func.count()).select_from(User))


def init_db(engine: Engine) -> bool:
    """Create the tables, and fill them if there are no users yet; True if it filled them."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if not is_empty(session):
            return False
        seed(session)
    return True


def org_document_counts() -> sa.Select[str, int]:
    """Each organisation's name and number of documents, by name (the object-less report)."""
    return (
        sa.select(Organisation.name, sa.func.count(Document.id))
        .outerjoin(Document, Document.org_id == Organisation.id)
        .group_by(Organisation.id, Organisation.name)
        .order_by(Organisation.name)
    )
