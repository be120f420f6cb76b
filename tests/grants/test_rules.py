"""bastion.grants.rules: ``holds`` through every tier, scope and validity window, answered the same
by the Python check (cached effective grants), the SQL check and the filter.

The data (``schema.populate``)::

    doc  org  team  space  owner       users: 1 (home org 1), 2 (home 2), 3 (no home), 4 (home 1)
    1    1    red   7      1           service accounts: "ci", "1"
    2    1    blu   -      2           pages: "home", "about", "05"
    3    2    -     7      -
    4    -    red   8      3
    5    0    r     -      -
    6    5    05    -      4
    7    2    red   7      2           (an Invoice)

``allowed(authz, who, permission)`` asks four ways (check on loaded objects, check on expired
objects, ``check_in_database``, ``filter``), asserts that they agree and returns the ids.
"""

from __future__ import annotations

import datetime as dt
import gc
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion import (
    Authorizer,
    InvalidArgument,
    InvalidName,
    Permission,
    Policy,
    Role,
    RolePolicy,
    RuleNotTranslatable,
    subject,
    target,
)
from bastion.grants import (
    GrantStore,
    HasGrant,
    effective_grants,
    forget_grants,
    grant_models,
    holds,
)

from .schema import (
    SPACE,
    Document,
    Folder,
    Invoice,
    Member,
    Page,
    ServiceAccount,
    User,
    World,
    allowed,
    answers,
    grants,
    policy,
    uuid_grants,
)

UTC = dt.timezone.utc
ALL = [1, 2, 3, 4, 5, 6, 7]


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def user(w: World, user_id: int) -> User:
    return w.session.get(User, user_id)  # type: ignore[return-value]


class Counter:
    """Counts the statements sent to the database (``before_cursor_execute``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements = []
        sa.event.listen(self.engine, "before_cursor_execute", self)
        try:
            yield self.statements
        finally:
            sa.event.remove(self.engine, "before_cursor_execute", self)


# -- tiers ------------------------------------------------------------------------------------


def _grant_through(w: World, who: Any, tier: str, token: str, **kw: Any) -> None:
    store = w.store
    if tier == "direct":
        store.grant(who, permission=token, **kw)
    elif tier == "bundle":
        store.create_bundle(f"b-{token}", [token])
        store.grant(who, bundle=f"b-{token}", **kw)
    elif tier == "group":
        store.create_group(f"g-{token}")
        store.grant(f"g-{token}", permission=token)
        store.add_member(f"g-{token}", who, **kw)
    else:  # group bundle
        store.create_bundle(f"b-{token}", [token])
        store.create_group(f"g-{token}")
        store.grant(f"g-{token}", bundle=f"b-{token}")
        store.add_member(f"g-{token}", who, **kw)


TIERS = ["direct", "bundle", "group", "group bundle"]


@pytest.mark.parametrize("tier", TIERS)
def test_every_tier_grants(w: World, tier: str) -> None:
    alice, bob = user(w, 1), user(w, 2)
    _grant_through(w, alice, tier, "doc.read")  # global
    _grant_through(w, bob, tier, "doc.delete", scope=w.session.get(Document, 3))
    assert allowed(w.authz, alice, "doc.read") == ALL  # global holds in every scope, NULL too
    assert allowed(w.authz, bob, "doc.read") == []
    assert allowed(w.authz, bob, "doc.delete") == [3]
    assert allowed(w.authz, alice, "doc.delete") == []
    assert w.store.effective_permissions(alice) == [("doc.read", ("", ""), tier)]
    w.session.commit()
    assert allowed(w.authz, alice, "doc.read") == ALL  # and again after the cache was cleared


@pytest.mark.parametrize("tier", TIERS)
def test_no_target_permission(w: World, tier: str) -> None:
    alice, bob = user(w, 1), user(w, 2)
    _grant_through(w, alice, tier, "reports.view")
    _grant_through(w, bob, "direct", "reports.view", expires_at=utc_now() - dt.timedelta(hours=1))
    plan = policy.plan("reports.view", User, None)
    for who, expected in ((alice, True), (bob, False), (user(w, 3), False)):
        assert w.authz.check(who, "reports.view") is expected
        assert w.authz.check_in_database(plan, who, None, {}) is expected


# -- scopes -----------------------------------------------------------------------------------


def test_org_scope(w: World) -> None:
    s, store = w.session, w.store
    store.grant(user(w, 1), permission="doc.read", scope=("org", 1))
    store.grant(user(w, 2), permission="doc.read", scope=("org", 0))
    store.grant(user(w, 3), permission="doc.read", scope=("org", "2"))  # a string: same text
    store.grant(user(w, 4), permission="doc.read", scope=("team", 1))  # another scope type
    assert allowed(w.authz, user(w, 1), "doc.read") == [1, 2]
    assert allowed(w.authz, user(w, 2), "doc.read") == [5]
    assert allowed(w.authz, user(w, 3), "doc.read") == [3, 7]
    assert allowed(w.authz, user(w, 4), "doc.read") == []
    assert allowed(w.authz, user(w, 1), "doc.edit") == [1]  # owner only: doc.edit not held
    s.commit()


def test_object_scope(w: World) -> None:
    s, store = w.session, w.store
    alice = user(w, 1)
    store.grant(alice, permission="doc.delete", scope=s.get(Document, 3))
    store.grant(alice, permission="doc.delete", scope=("Document", 6))  # the same, spelled out
    store.grant(alice, permission="doc.delete", scope=("Invoice", 7))  # not how objects are named
    store.grant(alice, permission="doc.delete", scope=("org", 5))  # not an object scope
    store.grant(alice, permission="doc.edit", scope=s.get(Page, "05"))
    store.grant(alice, permission="doc.edit", scope=("Page", "home "))  # not the same text
    assert allowed(w.authz, alice, "doc.delete") == [3, 6]
    assert allowed(w.authz, alice, "page.edit", Page) == ["05"]
    assert allowed(w.authz, user(w, 2), "page.edit", Page) == []


def test_object_scope_across_inheritance(w: World) -> None:
    """A grant on an ``Invoice`` is a grant on that ``Document`` row: check, filter(Document) and
    filter(Invoice) agree (the scope type is the base class of the hierarchy)."""
    s, store = w.session, w.store
    bob = user(w, 2)
    store.grant(bob, permission="doc.delete", scope=s.get(Invoice, 7))
    assert allowed(w.authz, bob, "doc.delete", Document) == [7]
    assert allowed(w.authz, bob, "doc.delete", Invoice) == [7]
    assert w.authz.check(bob, "doc.delete", s.get(Invoice, 7))


GROUP_PATHS = [
    (None, None, ALL),
    (("org", 1), None, [1, 2]),
    (None, ("org", 2), [3, 7]),
    (("org", 1), ("org", 1), [1, 2]),
    (("org", 1), ("org", 2), []),  # two edges scoped differently grant nothing
    (("team", "red"), ("org", 1), []),
    (("org", 1), ("team", 1), []),
]


@pytest.mark.parametrize("via_bundle", [False, True])
def test_scopes_along_a_group_path(w: World, via_bundle: bool) -> None:
    """(membership scope, group edge scope) -> documents; a user and a group per case."""
    store = w.store
    members = [User(id=100 + n) for n in range(len(GROUP_PATHS))]
    w.session.add_all(members)
    w.session.commit()
    store.create_bundle("readers", ["doc.read"])
    for n, (membership, group_edge, _) in enumerate(GROUP_PATHS):
        store.create_group(f"g{n}")
        if via_bundle:
            store.grant(f"g{n}", bundle="readers", scope=group_edge)
        else:
            store.grant(f"g{n}", permission="doc.read", scope=group_edge)
        store.add_member(f"g{n}", members[n], scope=membership)
    for who, (membership, group_edge, expected) in zip(members, GROUP_PATHS, strict=True):
        assert allowed(w.authz, who, "doc.read") == expected, (membership, group_edge)
        held = w.store.effective_permissions(who)
        assert bool(held) is bool(expected), (membership, group_edge)


def test_string_scope_column_is_compared_as_text(w: World) -> None:
    """``team`` is VARCHAR(3): the scope id is compared as text, never cast (a cast would cut
    ``'redx'`` to ``'red'``)."""
    store = w.store
    store.grant(user(w, 1), permission="doc.read", scope=("team", "red"))
    store.grant(user(w, 2), permission="doc.read", scope=("team", "redx"))
    store.grant(user(w, 2), permission="doc.read", scope=("team", "RED"))
    store.grant(user(w, 3), permission="doc.read", scope=("team", "05"))
    assert allowed(w.authz, user(w, 1), "doc.team") == [1, 4, 7]
    assert allowed(w.authz, user(w, 2), "doc.team") == []
    assert allowed(w.authz, user(w, 3), "doc.team") == [6]


def test_uuid_scope_column(w: World) -> None:
    store, seven = w.store, SPACE
    store.grant(user(w, 1), permission="doc.read", scope=("space", seven))
    store.grant(user(w, 2), permission="doc.read", scope=("space", str(seven)))  # hyphens
    store.grant(user(w, 2), permission="doc.read", scope=("space", seven.hex.upper()))
    store.grant(user(w, 3), permission="doc.read", scope=("space", "not a uuid"))
    store.grant(user(w, 4), permission="doc.read", scope=("space", seven.hex))  # as scope_key
    assert allowed(w.authz, user(w, 1), "doc.space") == [1, 3, 7]
    assert allowed(w.authz, user(w, 2), "doc.space") == []
    assert allowed(w.authz, user(w, 3), "doc.space") == []
    assert allowed(w.authz, user(w, 4), "doc.space") == [1, 3, 7]


NOT_INTEGER_TEXT = ["05", " 2", "2 ", "+1", "-0", "1.0", "1e0", "abc", "", "0x1", "\uff12"]


def test_scope_ids_that_are_not_the_text_of_an_integer_never_match(w: World) -> None:
    """The Python check compares ``str(org_id)`` with ``scope_id``; SQL must not convert ``'05'``
    to 5 (SQLite casts it, and ``'abc'`` to 0) nor fail on it (PostgreSQL)."""
    users = [User(id=100 + n) for n in range(len(NOT_INTEGER_TEXT))]
    w.session.add_all(users)
    w.session.commit()
    links = grants.users[User].permissions
    read_id = w.session.scalar(
        sa.select(grants.Permission.id).where(grants.Permission.token == "doc.read")
    )
    for who, scope_id in zip(users, NOT_INTEGER_TEXT, strict=True):
        if scope_id:
            w.store.grant(who, permission="doc.read", scope=("org", scope_id))
        else:  # the store refuses an empty id; a row written otherwise must not match org 0
            values = {"user_id": who.id, "permission_id": read_id}
            w.session.execute(sa.insert(links).values(scope_type="org", scope_id="", **values))
    w.session.commit()
    for who, scope_id in zip(users, NOT_INTEGER_TEXT, strict=True):
        assert allowed(w.authz, who, "doc.read") == [], scope_id


def test_extreme_integer_scope_ids(w: World) -> None:
    top = 2**31 - 1  # org_id is a 32-bit INTEGER
    w.session.add_all([Document(id=8, org_id=top), Document(id=9, org_id=-top - 1)])
    w.session.commit()
    w.store.grant(user(w, 1), permission="doc.read", scope=("org", top))
    w.store.grant(user(w, 2), permission="doc.read", scope=("org", -top - 1))
    for text in (str(top + 1), str(2**63), str(-(2**63) - 1), "1" * 40):
        w.store.grant(user(w, 3), permission="doc.read", scope=("org", text))
    assert allowed(w.authz, user(w, 1), "doc.read") == [8]
    assert allowed(w.authz, user(w, 2), "doc.read") == [9]
    assert allowed(w.authz, user(w, 3), "doc.read") == []


def test_scope_from_the_subject_or_the_context(w: World) -> None:
    store = w.store
    for user_id in (1, 2, 3):
        store.grant(user(w, user_id), permission="doc.read", scope=("org", 1))
    assert allowed(w.authz, user(w, 1), "doc.home") == ALL  # home org 1
    assert allowed(w.authz, user(w, 2), "doc.home") == []  # home org 2
    assert allowed(w.authz, user(w, 3), "doc.home") == []  # no home org: global grants only
    assert allowed(w.authz, user(w, 1), "doc.ctx", org=1) == ALL
    assert allowed(w.authz, user(w, 1), "doc.ctx", org=2) == []
    assert allowed(w.authz, user(w, 1), "doc.ctx", org=None) == []
    store.grant(user(w, 3), permission="doc.read")
    assert allowed(w.authz, user(w, 3), "doc.home") == ALL
    assert allowed(w.authz, user(w, 3), "doc.ctx", org=None) == ALL


# -- validity windows ---------------------------------------------------------------------------


def _window(kind: str) -> dict[str, dt.datetime]:
    now = utc_now()
    tokyo, new_york = dt.timezone(dt.timedelta(hours=9)), dt.timezone(dt.timedelta(hours=-5))
    hour = dt.timedelta(hours=1)
    return {
        "open": {},
        "expired": {"expires_at": now - hour},
        "not yet": {"valid_from": now + hour},
        "current": {"valid_from": now - hour, "expires_at": now + hour},
        "past window": {"valid_from": now - 3 * hour, "expires_at": now - 2 * hour},
        # the same instants in other time zones, and naive (read as UTC)
        "aware tokyo, current": {"expires_at": (now + 2 * hour).astimezone(tokyo)},
        "aware new york, expired": {"expires_at": (now - 2 * hour).astimezone(new_york)},
        "aware tokyo, not yet": {"valid_from": (now + 2 * hour).astimezone(tokyo)},
        "naive, current": {"expires_at": (now + hour).replace(tzinfo=None)},
        "naive, expired": {"expires_at": (now - hour).replace(tzinfo=None)},
        "naive, started": {"valid_from": (now - hour).replace(tzinfo=None)},
    }[kind]


WINDOWS = {
    "open": True,
    "expired": False,
    "not yet": False,
    "current": True,
    "past window": False,
    "aware tokyo, current": True,
    "aware new york, expired": False,
    "aware tokyo, not yet": False,
    "naive, current": True,
    "naive, expired": False,
    "naive, started": True,
}


@pytest.mark.parametrize(
    ("tier", "edge"),
    [(t, "user") for t in TIERS] + [("group", "group"), ("group bundle", "group")],
)
def test_validity_windows(w: World, tier: str, edge: str) -> None:
    """Each window on each tier (and on the group's own edge): every path agrees."""
    store = w.store
    users = {kind: User(id=100 + n, name=kind) for n, kind in enumerate(WINDOWS)}
    w.session.add_all(users.values())
    w.session.commit()
    if tier in ("group", "group bundle"):
        store.create_group("staff")
        if tier == "group bundle":
            store.create_bundle("readers", ["doc.read"])
    for n, (kind, who) in enumerate(users.items()):
        window = _window(kind)
        if tier == "direct":
            store.grant(who, permission="doc.read", scope=("org", 1), **window)
        elif tier == "bundle":
            store.create_bundle(f"b{n}", ["doc.read"])
            store.grant(who, bundle=f"b{n}", scope=("org", 1), **window)
        elif edge == "user":
            store.add_member("staff", who, scope=("org", 1), **window)
        else:  # a group per window; the window is on the group's own edge
            store.create_group(f"g{n}")
            what = {"permission": "doc.read"} if tier == "group" else {"bundle": "readers"}
            store.grant(f"g{n}", **what, scope=("org", 1), **window)
            store.add_member(f"g{n}", who)
    if tier in ("group", "group bundle") and edge == "user":
        if tier == "group":
            store.grant("staff", permission="doc.read")
        else:
            store.grant("staff", bundle="readers")
    w.session.commit()
    for kind, who in users.items():
        expected = [1, 2] if WINDOWS[kind] else []
        assert allowed(w.authz, who, "doc.read") == expected, kind


def test_python_and_sql_use_the_database_clock(w: World) -> None:
    """``EffectiveGrants.now`` is the database's time in UTC, read by the same query."""
    w.store.grant(user(w, 1), permission="doc.read", expires_at=utc_now() + dt.timedelta(hours=1))
    grants_ = effective_grants(w.session, grants, user(w, 1))
    assert grants_ is not None
    assert grants_.now is not None
    assert abs(grants_.now - utc_now().replace(tzinfo=None)) < dt.timedelta(minutes=5)
    assert grants_.holds("doc.read", ("org", "1"))
    assert not grants_.holds("doc.edit")


# -- several user models, string and UUID keys ---------------------------------------------------


def test_user_models_do_not_share_grants(w: World) -> None:
    s, store = w.session, w.store
    bot, one = s.get(ServiceAccount, "ci"), s.get(ServiceAccount, "1")
    store.grant(bot, permission="doc.read", scope=("org", 2))
    store.grant(one, permission="reports.view")
    store.grant(user(w, 1), permission="doc.delete")
    assert allowed(w.authz, bot, "doc.read") == [3, 7]
    assert allowed(w.authz, user(w, 1), "doc.read") == []
    assert w.authz.check(one, "reports.view")
    assert not w.authz.check(user(w, 1), "reports.view")  # user 1 is not account "1"
    assert allowed(w.authz, one, "doc.delete") == []
    assert allowed(w.authz, user(w, 1), "doc.delete") == ALL
    store.create_group("bots")
    store.grant("bots", permission="doc.read")
    store.add_member("bots", one)
    assert allowed(w.authz, one, "doc.read") == ALL
    assert allowed(w.authz, user(w, 1), "doc.read") == []


def test_uuid_keys_and_a_primary_key_under_another_attribute_name(w: World) -> None:
    s = w.session
    m1, m2 = Member(ident=uuid.uuid4()), Member(ident=uuid.uuid4())
    folders = [
        Folder(id=uuid.UUID(int=n), tenant=t) for n, t in ((1, "acme"), (2, "acme"), (3, None))
    ]
    s.add_all([m1, m2, *folders])
    s.commit()
    store = GrantStore(s, uuid_grants, actor="root")
    store.create_permission("folder.open")
    store.grant(m1, permission="folder.open", scope=s.get(Folder, uuid.UUID(int=3)))
    store.create_group("acme-staff")
    store.grant("acme-staff", permission="folder.open", scope=("tenant", "acme"))
    store.add_member("acme-staff", m2)
    authz = Authorizer(policy, s)
    assert answers(authz, m1, "folder.open", Folder).agree() == [uuid.UUID(int=3)]
    assert answers(authz, m2, "folder.open", Folder).agree() == [
        uuid.UUID(int=1),
        uuid.UUID(int=2),
    ]
    [(token, scope, tier)] = store.effective_permissions(m1)
    assert (token, scope, tier) == ("folder.open", ("Folder", uuid.UUID(int=3).hex), "direct")


# -- grants with rules and roles ----------------------------------------------------------------


def test_owner_or_holds_in_the_documents_org(w: World) -> None:
    """``doc.edit`` = the owner, or holds ``doc.edit`` in the document's org."""
    store = w.store
    store.create_group("org2-editors")
    store.grant("org2-editors", permission="doc.edit", scope=("org", 2))
    store.add_member("org2-editors", user(w, 2))
    store.grant(user(w, 3), permission="doc.edit", expires_at=utc_now() - dt.timedelta(days=1))
    store.grant(
        user(w, 4),
        permission="doc.edit",
        scope=("org", 5),
        valid_from=utc_now() + dt.timedelta(days=1),
    )
    expected = {1: [1], 2: [2, 3, 7], 3: [4], 4: [6]}
    for user_id, ids in expected.items():
        assert allowed(w.authz, user(w, user_id), "doc.edit") == ids, user_id
    store.grant(user(w, 4), permission="doc.edit", scope=("org", 5))
    assert allowed(w.authz, user(w, 4), "doc.edit") == [6]
    store.grant(user(w, 4), permission="doc.edit", scope=("org", 1))
    assert allowed(w.authz, user(w, 4), "doc.edit") == [1, 2, 6]


def test_grants_combine_with_static_roles(w: World) -> None:
    roles = RolePolicy(
        [Role("user1", [Permission("doc.archive", when=target.org_id == 2)]), Role("user2", [])]
    )
    local = Policy(["doc.archive"])
    local.allow(
        "doc.archive",
        subject=User,
        target=Document,
        when=roles.grants(subject.name, "doc.archive")
        | holds(grants, "doc.read", scope=("org", target.org_id)),
    )
    w.store.grant(user(w, 1), permission="doc.read", scope=("org", 1))
    w.store.grant(user(w, 2), permission="doc.read", scope=("org", 0))
    authz = Authorizer(local, w.session)
    assert allowed(authz, user(w, 1), "doc.archive") == [1, 2, 3, 7]  # role: org 2; grant: org 1
    assert allowed(authz, user(w, 2), "doc.archive") == [5]
    assert allowed(authz, user(w, 3), "doc.archive") == []


def test_negated_grants(w: World) -> None:
    """``~holds``: the EXISTS form (no IN shortcut under NOT), NULL scopes included."""
    local = Policy(["doc.hide"])
    local.allow(
        "doc.hide",
        subject=User,
        target=Document,
        when=~holds(grants, "doc.read", scope=("org", target.org_id))
        & ~holds(grants, "doc.delete", on_target=True),
    )
    w.store.grant(user(w, 1), permission="doc.read", scope=("org", 1))
    w.store.grant(user(w, 1), permission="doc.delete", scope=w.session.get(Document, 5))
    w.store.grant(user(w, 2), permission="doc.read")
    authz = Authorizer(local, w.session)
    assert allowed(authz, user(w, 1), "doc.hide") == [3, 4, 6, 7]
    assert allowed(authz, user(w, 2), "doc.hide") == []
    assert allowed(authz, user(w, 3), "doc.hide") == ALL


def test_filter_uses_an_in_semijoin_on_the_scope_column(w: World) -> None:
    stmt = w.authz.filter(user(w, 1), "doc.read", sa.select(Document.id))
    sql = str(stmt.compile(w.engine))
    assert "documents.org_id IN (SELECT" in sql
    assert "JOIN documents" not in sql  # never a row-multiplying join on the target


# -- registration ---------------------------------------------------------------------------------


def test_registration_refuses_what_cannot_be_compared_both_ways() -> None:
    class LocalBase(DeclarativeBase):
        pass

    class Person(LocalBase):
        __tablename__ = "people"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Thing(LocalBase):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)
        day: Mapped[dt.date | None]
        flag: Mapped[bool | None]
        price: Mapped[float | None]
        ref: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid(as_uuid=False))
        # a collation: SQL compared "RED" equal to a grant in "red", the Python check did not
        team: Mapped[str | None] = mapped_column(sa.String(10, collation="NOCASE"))

    models = grant_models(LocalBase)
    models.register_user(Person)
    local = Policy(["x"])
    for column in ("day", "flag", "price", "ref", "team"):
        with pytest.raises(RuleNotTranslatable, match="scope column"):
            local.allow(
                "x",
                subject=Person,
                target=Thing,
                when=holds(models, "x", scope=("s", getattr(target, column))),
            )
    with pytest.raises(RuleNotTranslatable, match="holds no stored grants"):
        local.allow("x", subject=Thing, target=Thing, when=holds(models, "x"))
    assert local.rules() == ()
    local.allow("x", subject=Person, target=Thing, when=holds(models, "x", scope=("s", target.id)))


def test_holds_arguments() -> None:
    assert holds(grants, "doc.read") == HasGrant(grants, "doc.read")
    assert str(holds(grants, "doc.read", on_target=True)) == "holds('doc.read' on target)"
    for bad in ("doc read", "doc'read", "a;b", ""):
        with pytest.raises(InvalidName):
            holds(grants, bad)
    with pytest.raises(InvalidArgument):
        holds(grants, 42)
    for scope in (("", target.org_id), (1, target.org_id), ("x" * 65, 1)):
        with pytest.raises(InvalidArgument):
            holds(grants, "doc.read", scope=scope)


def test_a_predicate_needs_the_authorizers_session(w: World) -> None:
    plan = policy.plan("doc.read", User, Document)
    with pytest.raises(InvalidArgument, match="Authorizer"):
        plan.predicate(user(w, 1), w.session.get(Document, 1), {}, None)


def test_transient_subjects_hold_nothing(w: World) -> None:
    ghost = User(id=1)  # same id as a stored user, but not persistent
    w.store.grant(user(w, 1), permission="doc.read")
    assert allowed(w.authz, ghost, "doc.read") == []
    assert not w.authz.check(ghost, "reports.view")


# -- the cache rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True], ids=["asked", "loaded"])
def test_store_changes_are_seen_by_the_next_check_at_once(w: World, cached: bool) -> None:
    s, authz, alice = w.session, w.authz, user(w, 1)
    doc = s.get(Document, 1)
    if cached:
        assert effective_grants(s, grants, alice) is not None  # loaded and cached now
    assert not authz.check(alice, "doc.read", doc)  # asks (EXISTS), or reads the cache
    assert not authz.check(alice, "doc.read", doc)  # the cache in both cases
    w.store.grant(alice, permission="doc.read", scope=("org", 1))
    assert authz.check(alice, "doc.read", doc)
    w.store.revoke(alice, permission="doc.read", scope=("org", 1))
    assert not authz.check(alice, "doc.read", doc)
    w.store.create_group("staff")
    w.store.grant("staff", permission="doc.read")
    w.store.add_member("staff", alice, expires_at=utc_now() + dt.timedelta(hours=1))
    assert authz.check(alice, "doc.read", doc)
    w.store.delete("group", "staff")
    assert not authz.check(alice, "doc.read", doc)


def test_the_inlined_global_lookup_follows_the_store_and_pins_its_subjects(w: World) -> None:
    """A global grant's check is made by ``Authorizer.check`` itself from the index of cached
    grants, keyed by ``id(subject)``: store changes are seen at once, and an indexed subject is
    kept alive (so its id cannot be reused by another object) until the index is dropped."""
    s, authz = w.session, w.authz
    assert policy.plan("reports.view", User, None).session_lookup is not None
    alice = user(w, 1)
    assert effective_grants(s, grants, alice) is not None  # cached: the inlined lookup applies
    assert authz.check(alice, "reports.view") is False
    w.store.grant(alice, permission="reports.view")
    assert authz.check(alice, "reports.view") is True
    w.store.revoke(alice, permission="reports.view")
    assert authz.check(alice, "reports.view") is False
    assert effective_grants(s, grants, alice) is not None
    alive = weakref.ref(alice)
    del alice
    gc.collect()
    assert alive() is not None  # indexed: pinned
    s.commit()  # the index is dropped with the cache
    gc.collect()
    assert alive() is None


def test_other_sessions_see_committed_changes(w: World) -> None:
    with Session(w.engine) as other:
        other_authz = Authorizer(policy, other)
        other_alice, other_doc = other.get(User, 1), other.get(Document, 1)
        assert not other_authz.check(other_alice, "doc.read", other_doc)
        assert not other_authz.check(other_alice, "doc.read", other_doc)  # loaded, cached
        w.store.grant(user(w, 1), permission="doc.read")
        w.session.commit()
        # documented: the cache lives until this session's transaction ends
        assert not other_authz.check(other_alice, "doc.read", other_doc)
        other.commit()
        assert other_authz.check(other.get(User, 1), "doc.read", other.get(Document, 1))
    with Session(w.engine) as fresh:
        assert Authorizer(policy, fresh).check(
            fresh.get(User, 1), "doc.read", fresh.get(Document, 1)
        )


def test_commit_and_rollback_clear_the_cache(w: World) -> None:
    s, authz = w.session, w.authz
    alice = user(w, 1)
    authz.check(alice, "doc.read", s.get(Document, 1))
    assert s.info.get("bastion.effective_grants")
    s.commit()
    assert not s.info.get("bastion.effective_grants")
    w.store.grant(user(w, 1), permission="doc.read")
    assert authz.check(user(w, 1), "doc.read", s.get(Document, 1))
    s.rollback()  # the grant was never committed
    assert not s.info.get("bastion.effective_grants")
    assert not authz.check(user(w, 1), "doc.read", s.get(Document, 1))
    assert allowed(authz, user(w, 1), "doc.read") == []


@pytest.mark.parametrize("end", ["close", "reset"])
def test_closing_or_resetting_the_session_clears_the_cache(w: World, end: str) -> None:
    """``close()``/``reset()`` end the transaction without a commit or rollback event: the
    cached grants (in ``session.info``, which outlives them) answered the next transaction,
    allowing a grant another session had revoked and committed meanwhile."""
    s, authz = w.session, w.authz
    w.store.grant(user(w, 1), permission="doc.read")
    s.commit()
    doc = s.get(Document, 1)
    assert authz.check(user(w, 1), "doc.read", doc)
    assert authz.check(user(w, 1), "doc.read", doc)  # loaded and cached
    assert s.info.get("bastion.effective_grants")
    getattr(s, end)()
    assert not s.info.get("bastion.effective_grants")
    with Session(w.engine) as admin:
        GrantStore(admin, grants, actor="admin").revoke(admin.get(User, 1), permission="doc.read")
        admin.commit()
    assert not authz.check(user(w, 1), "doc.read", s.get(Document, 1))


def test_a_rolled_back_savepoint_clears_the_cache(w: World) -> None:
    s, authz = w.session, w.authz
    alice, doc = user(w, 1), s.get(Document, 1)
    savepoint = s.begin_nested()
    w.store.grant(alice, permission="doc.read")
    assert authz.check(alice, "doc.read", doc)
    savepoint.rollback()
    assert not authz.check(alice, "doc.read", doc)


def test_changes_outside_the_store_need_forget_grants(w: World) -> None:
    """Documented: only the store clears the cache; raw writes call ``forget_grants``."""
    s, authz = w.session, w.authz
    alice, doc = user(w, 1), s.get(Document, 1)
    assert not authz.check(alice, "doc.read", doc)  # the first check asks (nothing cached)
    assert not authz.check(alice, "doc.read", doc)  # the second loads and caches
    pid = s.scalar(sa.select(grants.Permission.id).where(grants.Permission.token == "doc.read"))
    s.execute(sa.insert(grants.users[User].permissions).values(user_id=1, permission_id=pid))
    assert not authz.check(alice, "doc.read", doc)  # the cached answer
    assert w.authz.filter(alice, "doc.read", Document) is not None
    forget_grants(s)
    assert authz.check(alice, "doc.read", doc)


# -- statement counts -----------------------------------------------------------------------------


def test_first_check_asks_one_exists_the_second_loads_the_grants(w: World) -> None:
    """Documented (bastion.grants.effective): a subject's first check in a session is one
    prebuilt ``SELECT EXISTS``; the second loads its effective grants in one query; none after."""
    s, store, authz = w.session, w.store, w.authz
    store.create_bundle("readers", ["doc.read", "doc.delete"])
    store.create_group("staff")
    store.grant("staff", bundle="readers", scope=("org", 1))
    store.grant(user(w, 1), permission="doc.edit", scope=("org", 2))
    store.add_member("staff", user(w, 1))
    s.commit()
    alice = user(w, 1)
    docs = s.scalars(sa.select(Document).order_by(Document.id)).all()
    counter = Counter(w.engine)
    with counter.counting() as statements:
        assert authz.check(alice, "doc.read", docs[0])
    assert len(statements) == 1, statements
    assert statements[0].startswith("SELECT EXISTS"), statements
    with counter.counting() as statements:
        assert not authz.check(alice, "doc.read", docs[2])  # org 2
    assert len(statements) == 1, statements
    assert "paths" in statements[0]  # the load of every path
    with counter.counting() as statements:
        results = [
            authz.check(alice, permission, doc)
            for permission in ("doc.read", "doc.edit", "doc.delete", "doc.team", "doc.home")
            for doc in docs
        ]
        assert authz.check(alice, "reports.view") is False
    assert statements == []
    assert sum(results) > 3


def test_the_first_check_and_the_cache_agree(w: World) -> None:
    """Each check as a subject's first (EXISTS) answers as the cached effective grants do."""
    s, store, authz = w.session, w.store, w.authz
    store.create_bundle("readers", ["doc.read", "doc.delete"])
    store.create_group("staff")
    store.grant("staff", bundle="readers", scope=("org", 1))
    store.grant(user(w, 1), permission="doc.edit", scope=("org", 2))
    store.grant(user(w, 1), permission="doc.delete", scope=("Document", 3))
    store.add_member("staff", user(w, 1))
    s.commit()
    alice = user(w, 1)
    docs = s.scalars(sa.select(Document).order_by(Document.id)).all()
    cases = [(p, d) for p in ("doc.read", "doc.edit", "doc.delete", "doc.team") for d in docs]
    first = []
    for permission, doc in cases:
        forget_grants(s)
        first.append(authz.check(alice, permission, doc))
    effective_grants(s, grants, alice)
    assert first == [authz.check(alice, p, d) for p, d in cases]
    assert any(first)
    assert not all(first)


def test_effective_grants_are_compact(w: World) -> None:
    """Tokens are shared string objects across subjects; no scoped set without scoped grants."""
    s, store = w.session, w.store
    store.grant(user(w, 1), permission="doc.read")
    store.grant(user(w, 2), permission="doc.read")
    store.grant(user(w, 2), permission="doc.edit", scope=("org", 1))
    a = effective_grants(s, grants, user(w, 1))
    b = effective_grants(s, grants, user(w, 2))
    assert a is not None
    assert b is not None
    assert a.tokens == {"doc.read"}
    assert a.scoped == frozenset()
    assert next(iter(a.tokens)) is next(iter(b.tokens))
    assert b.scoped == {("doc.edit", "org", "1")}
    assert b.holds("doc.edit", ("org", "1"))
    assert not b.holds("doc.edit")
    assert b.valid == {("doc.read", "", ""), ("doc.edit", "org", "1")}
    assert effective_grants(s, grants, user(w, 1)) is a  # cached (by identity key)


def test_a_subject_without_grants_is_cached_too(w: World) -> None:
    s = w.session
    bob, docs = user(w, 2), s.scalars(sa.select(Document)).all()
    counter = Counter(w.engine)
    with counter.counting() as statements:
        assert not any(w.authz.check(bob, "doc.read", d) for d in docs)
    assert len(statements) == 2  # the first check's EXISTS, then the (empty) load
    with counter.counting() as statements:
        assert not any(w.authz.check(bob, "doc.read", d) for d in docs)
    assert statements == []


def test_a_check_on_an_unloaded_target_is_one_query(w: World) -> None:
    s, authz = w.session, w.authz
    w.store.grant(user(w, 1), permission="doc.read", scope=("org", 1))
    w.store.grant(user(w, 1), permission="doc.delete", scope=("Document", 2))
    s.commit()  # every object expired, the cache cleared
    alice, doc1, doc3 = user(w, 1), s.get(Document, 1), s.get(Document, 3)
    counter = Counter(w.engine)
    s.expire(doc1)
    with counter.counting() as statements:
        assert authz.check(alice, "doc.read", doc1)
    assert len(statements) == 1, statements  # one SELECT EXISTS; no refresh, no grants load
    assert "EXISTS" in statements[0]
    authz.check(alice, "doc.read", doc3)  # asks (the first check of alice in the session)
    s.expire(doc3)
    with counter.counting() as statements:
        assert not authz.check(alice, "doc.read", doc3)
    assert len(statements) == 1
    s.commit()
    with counter.counting() as statements:  # subject and target expired by the commit
        assert authz.check(alice, "doc.read", doc1)
    assert len(statements) == 1
    doc2 = s.get(Document, 2)
    s.expire(doc2)
    with counter.counting() as statements:  # object scope: the key is known, no query for it
        assert authz.check(alice, "doc.delete", doc2)
    assert len(statements) == 1  # the first check of the subject: one EXISTS


# -- who_can and explain read grants the same way ---------------------------------------------


def test_a_cached_clause_is_never_reused_for_a_value_of_another_type(w: World) -> None:
    """``True == 1`` in Python: after ``filter(org=1)``, ``filter(org=True)`` reused that clause
    where the check (and a fresh filter) refuse a boolean scope id."""
    w.store.grant(user(w, 1), permission="doc.read", scope=("org", 1))
    alice, query = user(w, 1), sa.select(Document.id)
    assert sorted(w.session.scalars(w.authz.filter(alice, "doc.ctx", query, org=1))) == ALL
    with pytest.raises(InvalidArgument, match="cannot identify a scope"):
        w.authz.filter(alice, "doc.ctx", query, org=True)
    with pytest.raises(InvalidArgument, match="cannot identify a scope"):
        w.authz.check(alice, "doc.ctx", w.session.get(Document, 1), org=True)


def test_who_can_agrees_with_check(w: World) -> None:
    """``who_can`` (grants read from the subject's side) lists exactly the users ``check``
    allows, with scope ids that are not the text of the column's values and an inherited class."""
    s, store = w.session, w.store
    store.grant(user(w, 1), permission="doc.read", scope=("org", "01"))
    store.grant(user(w, 2), permission="doc.read", scope=("org", 1))
    store.grant(user(w, 3), permission="doc.read", scope=("org", "abc"))
    store.grant(user(w, 1), permission="doc.read", scope=("team", "redx"))
    store.grant(user(w, 4), permission="doc.read", scope=("team", "red"))
    store.grant(user(w, 2), permission="doc.read", scope=("space", SPACE.hex.upper()))
    store.grant(user(w, 3), permission="doc.read", scope=("space", SPACE))
    store.grant(user(w, 4), permission="doc.delete", scope=s.get(Invoice, 7))
    store.grant(user(w, 1), permission="doc.delete", scope=("Invoice", 7))
    # doc.home reads the scope from the subject (home_org: user 4's is 1, user 2's is 2): user 2
    # holds doc.read in org 1, someone else's home org. who_can cross-joined the users table
    # there and listed user 2 (fixed: one correlated EXISTS per tier).
    store.grant(user(w, 4), permission="doc.read", scope=("org", 1))
    s.commit()
    users = s.scalars(sa.select(User).order_by(User.id)).all()
    assert [u.id for u in users if w.authz.check(u, "doc.home", s.get(Document, 1))] == [4]
    for doc in s.scalars(sa.select(Document).order_by(Document.id)).all():
        for permission in ("doc.read", "doc.team", "doc.space", "doc.delete", "doc.home"):
            who = w.authz.who_can(permission, doc, subject_type=User)
            listed = sorted(s.scalars(who.with_only_columns(User.id)))
            checked = [u.id for u in users if w.authz.check(u, permission, doc)]
            assert listed == checked, (doc, permission)


def test_explain_names_the_tier_of_an_object_grant_on_a_subclass(w: World) -> None:
    w.store.grant(user(w, 4), permission="doc.delete", scope=w.session.get(Invoice, 7))
    explanation = w.authz.explain(user(w, 4), "doc.delete", w.session.get(Invoice, 7))
    assert explanation.outcome is True
    assert "direct → permission doc.delete in Document 7" in str(explanation)


def test_a_replaced_session_is_the_one_checks_use(w: World) -> None:
    """``Authorizer.session`` may be replaced: checks without context values (which share one
    prebuilt context) and with them both go through the new session."""
    w.store.grant(user(w, 1), permission="doc.read")
    w.session.commit()
    with Session(w.engine) as other:
        w.authz.session = other
        alice, doc = other.get(User, 1), other.get(Document, 1)
        assert w.authz.check(alice, "doc.read", doc)
        assert other.info.get("bastion.effective_grants.asked")
        assert w.authz.check(alice, "doc.read", doc, unused="value")
        assert effective_grants(other, grants, alice) is not None
        assert not w.session.info.get("bastion.effective_grants.asked")
