"""One scenario combining every rule kind, for the page, reverse-lookup and explanation tests
(imported as ``_pages_world``; tests/ is on sys.path).

Schema (its own ``DeclarativeBase``; every non-key column nullable, to get NULLs everywhere):

* ``User``: ``level`` (comparisons), ``role`` (a static role column), ``is_staff``, and
  ``memberships`` (one-to-many, each row with an organisation role);
* ``Folder``: a tree (``parent``, self-referential many-to-one) with an ``owner_id``;
* ``Document``: ``org_id``, ``owner`` (many-to-one to ``User``), ``folder``, ``level``,
  ``status``, ``is_public``;
* ``Comment``: defers to its ``document``;
* ``Seat``: a composite primary key ``(org_id, number)``;
* ``Robot``: a second subject model (no rules in the scenario's policy).

Stored grants (``grant_models`` + ``register_user(User)``) with the bundles ``readers``
(doc.read, folder.view) and ``editors`` (doc.edit, doc.delete) and the groups ``staff`` and
``team``. Roles: ``SITE_ROLES`` read from ``User.role``, ``ORG_ROLES`` from membership rows.

Permissions and the rule kinds they use:

========================  =====================================================================
``doc.read``              site roles | comparison | public | grant in the document's org |
                          relationship from the subject (member of the document's org)
``doc.edit``              site roles (one conditional) | relationship from the target (owner) |
                          grant on the object | organisation role on a membership row
``doc.delete``            organisation roles (one conditional) | NOT with NULLs & owner
``doc.manage``            deferral to ``folder.view`` on the document's folder
``doc.archive``           a SQL-only rule (``policy.sql_rule``)
``doc.flag``              a Python-only rule (``check_only=True``)
``comment.read``          deferral to ``doc.read`` on the comment's document
``folder.view``           a tree: the folder or an ancestor is owned by the subject or granted
``seat.use``              composite keys: holder, or member of the seat's org
``reports.view``          no object: a global grant or ``is_staff``
========================  =====================================================================

``WHO``, a fixed data set written out (who_can and explanation tests)::

    user  level  role     is_staff  memberships (org: role)   grants
    1     2      editor             1: admin                  doc.read in org 1; doc.edit on doc 2
    2     NULL   author   false     2: member                 bundle readers in org 2
    3     1      guest              1: NULL                   group staff
    4     0                         3: member                 group team
    5     3      nobody             2: admin                  doc.read (expired); reports.view
                                                              (expired)
    6     NULL            true                                doc.read (from next hour)
    7     1      author             3: x                      group staff, edge scoped to org 1
    8     2      guest                                        folder.view on folder 4

    group staff: doc.read in org 3, doc.edit on doc 3; group team: bundle readers (doc.read,
    folder.view), reports.view

    doc  org   owner  level  status  public  folder
    1    1     2      1      draft   true    1
    2    2     7      NULL   NULL    false   3
    3    3     NULL   3      draft   NULL    4
    4    NULL  1      0      draft   false   NULL
    5    2     2      2      done    true    2

    folders: 1 (owner 1) <- 2 <- 3 (owner 3); 4 <-> 5 (a cycle, 5 owned by 5)
    comments: 1 on doc 1, 2 on doc 2, 3 on nothing
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from bastion import Authorizer, Permission, Policy, Role, RolePolicy, ancestors, it, subject, target
from bastion.grants import GrantModels, GrantStore, grant_models, holds


class Base(DeclarativeBase):
    """The registry of this scenario only."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    level: Mapped[int | None]
    role: Mapped[str | None] = mapped_column(sa.String(20))
    is_staff: Mapped[bool | None]
    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", order_by="Membership.org_id"
    )

    @property
    def clearance(self) -> int:
        """Not a column: a rule reading it cannot be read from the subject's side."""
        return (self.level or 0) + 1

    def __repr__(self) -> str:
        return f"User({self.id})"


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    role: Mapped[str | None] = mapped_column(sa.String(20))
    user: Mapped[User] = relationship(back_populates="memberships")


class Folder(Base):
    __tablename__ = "folders"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("folders.id"))
    owner_id: Mapped[int | None]
    parent: Mapped[Folder | None] = relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"Folder({self.id})"


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    org_id: Mapped[int | None]
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    folder_id: Mapped[int | None] = mapped_column(sa.ForeignKey("folders.id"))
    level: Mapped[int | None]
    status: Mapped[str | None] = mapped_column(sa.String(20))
    is_public: Mapped[bool | None]
    owner: Mapped[User | None] = relationship()
    folder: Mapped[Folder | None] = relationship()

    def __repr__(self) -> str:
        return f"Document({self.id})"


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    document_id: Mapped[int | None] = mapped_column(sa.ForeignKey("documents.id"))
    document: Mapped[Document | None] = relationship()


class Seat(Base):
    __tablename__ = "seats"

    org_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    holder_id: Mapped[int | None]


class Robot(Base):
    """A second subject model (who_can must then be told which one)."""

    __tablename__ = "robots"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    level: Mapped[int | None]


GRANTS: GrantModels = grant_models(Base)
GRANTS.register_user(User)

SITE_ROLES = RolePolicy(
    [
        Role("editor", ["doc.read", "doc.edit"]),
        Role("author", [Permission("doc.edit", when=target.owner_id == subject.id)]),
        Role("guest", [Permission("doc.read", when=target.is_public)]),
    ],
    name="site",
)
ORG_ROLES = RolePolicy(
    [
        Role("admin", ["doc.edit", "doc.delete"]),
        Role("member", [Permission("doc.delete", when=target.status == "draft")]),
    ],
    name="org",
)

#: stored permission tokens, bundles and groups (created once per database)
TOKENS = ("doc.read", "doc.edit", "doc.delete", "folder.view", "reports.view")
BUNDLES = {"readers": ["doc.read", "folder.view"], "editors": ["doc.edit", "doc.delete"]}
GROUPS = ("staff", "team")

DOCUMENT_ACTIONS = (
    "doc.read",
    "doc.edit",
    "doc.delete",
    "doc.manage",
    "doc.archive",
    "doc.flag",
)
#: the permissions whose rules can all be read from the subject's side, by target class
REVERSIBLE = {
    Document: ("doc.read", "doc.edit", "doc.delete", "doc.manage"),
    Comment: ("comment.read",),
    Folder: ("folder.view",),
    Seat: ("seat.use",),
}


def flag(user: User, doc: Document, **context: Any) -> bool:
    """A Python-only rule: documents above the user's level may be flagged."""
    return (doc.level or 0) > (user.level or 0)


def build_policy() -> Policy:
    """The scenario's policy (see the module docstring)."""
    policy = Policy(
        [
            "doc.delete",
            "doc.manage",
            "doc.archive",
            "doc.flag",
            "comment.read",
            "folder.view",
            "seat.use",
            "reports.view",
        ]
    )
    SITE_ROLES.register(policy, subject=User, target=Document, role=subject.role)
    policy.allow(
        "doc.read",
        subject=User,
        target=Document,
        when=(target.level <= subject.level)
        | target.is_public
        | holds(GRANTS, "doc.read", scope=("org", target.org_id))
        | subject.memberships.any(it.org_id == target.org_id),
        name="readers",
    )
    policy.allow(
        "doc.edit",
        subject=User,
        target=Document,
        when=(target.owner == subject)
        | holds(GRANTS, "doc.edit", on_target=True)
        | subject.memberships.any(
            (it.org_id == target.org_id) & ORG_ROLES.grants(it.role, "doc.edit")
        ),
        name="editors",
    )
    policy.allow(
        "doc.delete",
        subject=User,
        target=Document,
        when=subject.memberships.any(
            (it.org_id == target.org_id) & ORG_ROLES.grants(it.role, "doc.delete")
        )
        | (~(target.status == "published") & (target.owner_id == subject.id))
        | holds(GRANTS, "doc.delete", scope=("org", target.org_id)),
        name="deleters",
    )
    policy.defer("doc.manage", attributes="folder", bearer=User, target=Document, to="folder.view")
    policy.defer("comment.read", attributes="document", bearer=User, target=Comment, to="doc.read")
    policy.allow(
        "folder.view",
        subject=User,
        target=Folder,
        when=ancestors(
            target.parent,
            (target.owner_id == subject.id) | holds(GRANTS, "folder.view", on_target=True),
        ),
        name="tree",
    )

    @policy.sql_rule("doc.archive", bearer=User, target=Document, name="archivable")
    def archivable(query: Any, bearer: Any, target: Any, permission: Any) -> Any:
        return query.where(target.status == "done", target.owner_id == bearer.id)

    policy.allow("doc.flag", subject=User, target=Document, when=flag, check_only=True)
    policy.allow(
        "seat.use",
        subject=User,
        target=Seat,
        when=(target.holder_id == subject.id) | subject.memberships.any(it.org_id == target.org_id),
    )
    policy.allow(
        "reports.view", subject=User, when=holds(GRANTS, "reports.view") | subject.is_staff
    )
    return policy


def _no_sync(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.close()


def create_schema(engine: Engine) -> None:
    """Create the tables and the stored permissions, bundles and groups."""
    if engine.dialect.name == "sqlite":
        # No fsync per commit (the grant store commits each change): durability is irrelevant
        # here, and the property tests commit hundreds of times.
        sa.event.listen(engine, "connect", _no_sync)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        store = GrantStore(session, GRANTS, actor="tests")
        for token in TOKENS:
            store.create_permission(token)
        for label, tokens in BUNDLES.items():
            store.create_bundle(label, tokens)
        for label in GROUPS:
            store.create_group(label)


# ---------------------------------------------------------------------------------------------
# data

#: scopes a grant may have: global, an org, or one object (``("doc", 3)`` / ``("folder", 2)``)
Scope = Any


@dataclass
class Grant:
    """One grant edge: ``holder`` is a user id or a group label."""

    holder: int | str
    permission: str | None = None
    bundle: str | None = None
    group: str | None = None
    scope: Scope = None
    #: "past" (expired), "future" (not yet valid) or None (valid)
    window: str | None = None


@dataclass
class Data:
    """The rows of one example."""

    users: list[dict[str, Any]]
    memberships: list[dict[str, Any]] = field(default_factory=list)
    folders: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    seats: list[dict[str, Any]] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)


_LINKS = GRANTS.users[User]
#: tables emptied between examples (the permissions, bundles and groups stay)
_EXAMPLE_TABLES = [
    _LINKS.permissions,
    _LINKS.bundles,
    _LINKS.groups,
    GRANTS.group_permissions,
    GRANTS.group_bundles,
    Seat.__table__,
    Robot.__table__,
    Comment.__table__,
    Document.__table__,
    Folder.__table__,
    Membership.__table__,
    User.__table__,
]


WHO = Data(
    users=[
        {"id": 1, "level": 2, "role": "editor", "is_staff": None},
        {"id": 2, "level": None, "role": "author", "is_staff": False},
        {"id": 3, "level": 1, "role": "guest", "is_staff": None},
        {"id": 4, "level": 0, "role": None, "is_staff": None},
        {"id": 5, "level": 3, "role": "nobody", "is_staff": None},
        {"id": 6, "level": None, "role": None, "is_staff": True},
        {"id": 7, "level": 1, "role": "author", "is_staff": None},
        {"id": 8, "level": 2, "role": "guest", "is_staff": None},
    ],
    memberships=[
        {"user_id": 1, "org_id": 1, "role": "admin"},
        {"user_id": 2, "org_id": 2, "role": "member"},
        {"user_id": 3, "org_id": 1, "role": None},
        {"user_id": 4, "org_id": 3, "role": "member"},
        {"user_id": 5, "org_id": 2, "role": "admin"},
        {"user_id": 7, "org_id": 3, "role": "x"},
    ],
    folders=[
        {"id": 1, "parent_id": None, "owner_id": 1},
        {"id": 2, "parent_id": 1, "owner_id": None},
        {"id": 3, "parent_id": 2, "owner_id": 3},
        {"id": 4, "parent_id": 5, "owner_id": None},
        {"id": 5, "parent_id": 4, "owner_id": 5},
    ],
    documents=[
        dict(
            zip(
                ("id", "org_id", "owner_id", "level", "status", "is_public", "folder_id"),
                row,
                strict=True,
            )
        )
        for row in [
            (1, 1, 2, 1, "draft", True, 1),
            (2, 2, 7, None, None, False, 3),
            (3, 3, None, 3, "draft", None, 4),
            (4, None, 1, 0, "draft", False, None),
            (5, 2, 2, 2, "done", True, 2),
        ]
    ],
    comments=[
        {"id": 1, "document_id": 1},
        {"id": 2, "document_id": 2},
        {"id": 3, "document_id": None},
    ],
    seats=[
        {"org_id": 1, "number": 1, "holder_id": 8},
        {"org_id": 2, "number": 1, "holder_id": None},
    ],
    grants=[
        Grant(1, permission="doc.read", scope=("org", 1)),  # direct, scoped
        Grant(2, bundle="readers", scope=("org", 2)),  # bundle, scoped
        Grant("staff", permission="doc.read", scope=("org", 3)),  # group, scoped
        Grant(3, group="staff"),
        Grant("team", bundle="readers"),  # group bundle, global
        Grant(4, group="team"),
        Grant(5, permission="doc.read", window="past"),  # expired
        Grant(6, permission="doc.read", window="future"),  # not yet valid
        Grant(7, group="staff", scope=("org", 1)),  # two edges scoped differently: nothing
        Grant(1, permission="doc.edit", scope=("doc", 2)),  # on one object
        Grant("staff", permission="doc.edit", scope=("doc", 3)),
        Grant("team", permission="reports.view"),
        Grant(5, permission="reports.view", window="past"),
        Grant(8, permission="folder.view", scope=("folder", 4)),
    ],
)


def load(session: Session, data: Data) -> None:
    """Replace the example rows with ``data`` (and commit)."""
    for table in _EXAMPLE_TABLES:
        session.execute(sa.delete(table))
    session.commit()
    rows: list[tuple[type, list[dict[str, Any]]]] = [
        (User, data.users),
        (Membership, data.memberships),
        (Folder, [{**f, "parent_id": None} for f in data.folders]),
        (Document, data.documents),
        (Comment, data.comments),
        (Seat, data.seats),
    ]
    for cls, values in rows:
        if values:
            session.execute(sa.insert(cls), values)
    for folder in data.folders:  # parents last: a generated tree may have cycles
        if folder["parent_id"] is not None:
            session.execute(
                sa.update(Folder)
                .where(Folder.id == folder["id"])
                .values(parent_id=folder["parent_id"])
            )
    session.commit()
    store = GrantStore(session, GRANTS, actor="tests")
    now = dt.datetime.now(dt.timezone.utc)
    windows = {
        None: {},
        "past": {"expires_at": now - dt.timedelta(hours=1)},
        "future": {"valid_from": now + dt.timedelta(hours=1)},
    }
    for grant in data.grants:
        holder = grant.holder if isinstance(grant.holder, str) else session.get(User, grant.holder)
        store.grant(
            holder,
            permission=grant.permission,
            bundle=grant.bundle,
            group=grant.group,
            scope=_scope(session, grant.scope),
            **windows[grant.window],
        )
    session.commit()
    if session.get_bind().dialect.name == "postgresql":
        # Statistics, as after any bulk load (GUIDE): without them PostgreSQL estimates the
        # page statements (recursive CTE, grant unions) at thousands of rows per table, and
        # switches JIT on: ~1 s of compilation for five rows.
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        session.execute(sa.text(f"ANALYZE {names}"))
        session.commit()
    session.expunge_all()


def _scope(session: Session, scope: Scope) -> Scope:
    if scope is None or scope[0] == "org":
        return scope
    cls = {"doc": Document, "folder": Folder}[scope[0]]
    found = session.get(cls, scope[1])
    assert found is not None, scope
    return found


def objects(session: Session) -> dict[type, list[Any]]:
    """Every object of the example, by class, in key order."""
    return {
        cls: list(session.scalars(sa.select(cls).order_by(*cls.__table__.primary_key.columns)))
        for cls in (User, Document, Comment, Folder, Seat)
    }


def authorizer(session: Session, policy: Policy | None = None) -> Authorizer:
    return Authorizer(policy or build_policy(), session)


class StatementCounter:
    """Counts the statements sent to the database (``before_cursor_execute``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        sa.event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._count)

    @property
    def count(self) -> int:
        return len(self.statements)


def keyed(items: Iterable[Any]) -> dict[Any, Any]:
    """``{primary key: object}`` (a tuple for a composite key)."""
    out = {}
    for obj in items:
        key = sa.inspect(obj).identity
        out[key[0] if len(key) == 1 else tuple(key)] = obj
    return out
