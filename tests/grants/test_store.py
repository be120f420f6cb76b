"""bastion.grants.store: every change through ``GrantStore`` is one unit of work with an audit row;
bad input raises a ``BastionError`` and changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bastion import (
    BastionError,
    DuplicateName,
    InvalidArgument,
    InvalidName,
    PermissionNotFound,
)
from bastion.grants import RETRIES, GrantConflict, GrantStore, scope_of

from .schema import (
    SPACE,
    Document,
    Invoice,
    Member,
    Page,
    ServiceAccount,
    User,
    World,
    grants,
    uuid_grants,
)

UTC = dt.timezone.utc
AUDIT = ("actor", "action", "subject", "object", "scope", "reason")


def audit(w: World, last: int = 1) -> list[tuple[Any, ...]]:
    """The last ``last`` audit rows, oldest first, without id and time."""
    rows = w.store.audit_log(last)
    return [tuple(getattr(r, c) for c in AUDIT) for r in reversed(rows)]


def edges(w: World, table: sa.Table) -> list[tuple[Any, ...]]:
    rows = w.session.execute(sa.select(table)).all()
    return sorted(tuple(r) for r in rows)


def users_permissions(w: World) -> list[tuple[Any, ...]]:
    return edges(w, grants.users[User].permissions)


# -- permissions, bundles, groups ------------------------------------------------------------


def test_setup_audited_every_permission(w: World) -> None:
    rows = audit(w, 10)
    assert rows == [
        ("admin", "create permission", token, "", "", None)
        for token in ("doc.read", "doc.edit", "doc.delete", "reports.view", "folder.open")
    ]
    descriptions = w.session.execute(sa.select(grants.Permission.description)).scalars().all()
    assert "may doc.read" in descriptions


def test_create_rename_delete_with_audit(w: World) -> None:
    store = GrantStore(w.session, grants, actor="carol")
    permission = store.create_permission("doc.share", "share documents", reason="ticket 1")
    assert permission.id is not None
    assert permission.token == "doc.share"
    bundle = store.create_bundle("editors", ["doc.read", "doc.edit"], reason="ticket 2")
    assert sorted(p.token for p in bundle.permissions) == ["doc.edit", "doc.read"]
    group = store.create_group("Support staff")  # spaces are fine in labels
    assert group.label == "Support staff"
    store.rename("permission", "doc.share", "doc.publish")
    store.rename("bundle", "editors", "writers", reason="clearer")
    store.rename("group", "Support staff", "support")
    store.add_to_bundle("writers", "doc.delete", "doc.publish")
    store.remove_from_bundle("writers", "doc.read", reason="least privilege")
    store.delete("permission", "doc.publish")
    store.delete("bundle", "writers")
    store.delete("group", "support", reason="reorg")
    assert audit(w, 11) == [
        ("carol", "create permission", "doc.share", "", "", "ticket 1"),
        ("carol", "create bundle", "editors", "doc.read,doc.edit", "", "ticket 2"),
        ("carol", "create group", "Support staff", "", "", None),
        ("carol", "rename permission", "doc.share", "doc.publish", "", None),
        ("carol", "rename bundle", "editors", "writers", "", "clearer"),
        ("carol", "rename group", "Support staff", "support", "", None),
        ("carol", "add to bundle", "writers", "doc.delete,doc.publish", "", None),
        ("carol", "remove from bundle", "writers", "doc.read", "", "least privilege"),
        ("carol", "delete permission", "doc.publish", "", "", None),
        ("carol", "delete bundle", "writers", "", "", None),
        ("carol", "delete group", "support", "", "", "reorg"),
    ]
    w.session.commit()  # reading bundle.permissions opened a transaction: the caller commits
    counts = w.counts()
    assert counts["bastion_permissions"] == 5
    assert counts["bastion_bundles"] == 0
    assert counts["bastion_groups"] == 0
    assert counts["bastion_bundle_permissions"] == 0


def test_bundle_membership(w: World) -> None:
    store = w.store
    store.create_bundle("b")
    bp = grants.bundle_permissions
    store.add_to_bundle("b", "doc.read", "doc.edit")
    store.add_to_bundle("b", "doc.read")  # already there: no duplicate, no error
    assert len(edges(w, bp)) == 2
    store.remove_from_bundle("b", "doc.read", "doc.delete")  # doc.delete was not in it
    [(_, permission_id)] = edges(w, bp)
    assert w.session.get(grants.Permission, permission_id).token == "doc.edit"


def test_store_delete_removes_links(w: World) -> None:
    store, s = w.store, w.session
    store.create_bundle("b", ["doc.read"])
    store.create_group("g")
    store.grant("g", permission="doc.read")
    store.grant("g", bundle="b")
    for who in (s.get(User, 1), s.get(ServiceAccount, "ci")):
        store.grant(who, permission="doc.read")
        store.grant(who, bundle="b")
        store.add_member("g", who)
    store.delete("permission", "doc.read")
    counts = w.session_counts()
    for table in (
        "bastion_bundle_permissions",
        "bastion_group_permissions",
        "bastion_users_permissions",
        "bastion_service_accounts_permissions",
    ):
        assert counts[table] == 0, table
    assert counts["bastion_group_bundles"] == 1
    store.delete("group", "g")
    counts = w.session_counts()
    assert counts["bastion_group_bundles"] == 0
    assert counts["bastion_users_groups"] == 0
    assert counts["bastion_service_accounts_groups"] == 0
    store.delete("bundle", "b")
    counts = w.session_counts()
    assert counts["bastion_users_bundles"] == 0
    assert counts["bastion_service_accounts_bundles"] == 0


# -- grants ---------------------------------------------------------------------------------


def test_grant_and_revoke_every_edge_with_audit(w: World) -> None:
    store, s = w.store, w.session
    store.create_bundle("readers", ["doc.read"])
    store.create_group("staff")
    alice, ci = s.get(User, 1), s.get(ServiceAccount, "ci")
    invoice = s.get(Invoice, 7)
    store.grant(alice, permission="doc.read", reason="onboarding")
    store.grant(alice, permission="doc.edit", scope=("org", 2))
    store.grant(alice, bundle="readers", scope=invoice)
    store.add_member("staff", alice, scope=("team", "red"))
    store.grant(ci, permission="reports.view")
    store.grant("staff", permission="doc.delete", scope=("space", SPACE))
    store.grant("staff", bundle="readers")
    store.revoke(alice, permission="doc.edit", scope=("org", 2), reason="left org 2")
    store.remove_member("staff", alice, scope=("team", "red"))
    store.revoke("staff", bundle="readers")
    space = SPACE.hex
    assert audit(w, 10) == [
        ("admin", "grant", "User 1", "permission doc.read", "", "onboarding"),
        ("admin", "grant", "User 1", "permission doc.edit", "org:2", None),
        ("admin", "grant", "User 1", "bundle readers", "Document:7", None),
        ("admin", "grant", "User 1", "group staff", "team:red", None),
        ("admin", "grant", "ServiceAccount ci", "permission reports.view", "", None),
        ("admin", "grant", "group staff", "permission doc.delete", f"space:{space}", None),
        ("admin", "grant", "group staff", "bundle readers", "", None),
        ("admin", "revoke", "User 1", "permission doc.edit", "org:2", "left org 2"),
        ("admin", "revoke", "User 1", "group staff", "team:red", None),
        ("admin", "revoke", "group staff", "bundle readers", "", None),
    ]
    pid = {p.token: p.id for p in s.scalars(sa.select(grants.Permission))}
    assert users_permissions(w) == [(1, pid["doc.read"], "", "", None, None)]
    [(_, _, scope_type, scope_id, _, _)] = edges(w, grants.users[User].bundles)
    assert (scope_type, scope_id) == ("Document", "7")  # the base class of Invoice
    assert edges(w, grants.users[User].groups) == []
    assert edges(w, grants.users[ServiceAccount].permissions) == [
        ("ci", pid["reports.view"], "", "", None, None)
    ]
    assert [e[2:4] for e in edges(w, grants.group_permissions)] == [("space", space)]
    assert edges(w, grants.group_bundles) == []


def test_revoke_scope_removes_every_grant_in_that_scope(w: World) -> None:
    store, s, authz = w.store, w.session, w.authz
    store.create_bundle("deleters", ["doc.delete"])
    store.create_group("cleaners")
    alice, bob, carol = (s.get(User, n) for n in (1, 2, 3))
    ci = s.get(ServiceAccount, "ci")
    doc, other = s.get(Document, 3), s.get(Document, 1)
    store.grant(alice, permission="doc.delete", scope=doc)  # direct
    store.grant(bob, bundle="deleters", scope=doc)  # bundle
    store.grant(ci, permission="doc.delete", scope=doc)  # another user model
    store.add_member("cleaners", carol, scope=doc)  # group, both edges in the scope
    store.grant("cleaners", permission="doc.delete", scope=doc)
    store.grant("cleaners", bundle="deleters", scope=doc)
    store.grant(alice, permission="doc.delete", scope=other)  # another object: stays
    store.grant(alice, permission="doc.read", scope=("org", 2))  # another scope: stays
    store.add_member("cleaners", bob)  # global: stays
    holders = (alice, bob, carol, ci)
    assert all(authz.check(who, "doc.delete", doc) for who in holders)

    assert store.revoke_scope(doc, reason="document deleted") == 6
    assert audit(w) == [
        ("admin", "revoke_scope", "every holder", "6 grant(s)", "Document:3", "document deleted")
    ]
    assert not any(authz.check(who, "doc.delete", doc) for who in holders)  # seen at once
    assert authz.check(alice, "doc.delete", other)
    assert authz.check(alice, "doc.read", doc)  # org 2, not the object's scope
    assert [e[2:4] for e in edges(w, grants.users[User].groups)] == [("", "")]
    assert store.revoke_scope(("org", 2)) == 1
    assert not authz.check(alice, "doc.read", doc)
    assert store.revoke_scope(doc) == 0  # nothing left: an audited no-op
    assert audit(w)[0][:4] == ("admin", "revoke_scope", "every holder", "0 grant(s)")
    with pytest.raises(InvalidArgument, match="not the global scope"):
        store.revoke_scope(None)
    with pytest.raises(InvalidArgument, match="scope= takes"):
        store.revoke_scope(42)


def test_an_objects_grants_outlive_it_unless_revoked_with_it(w: World) -> None:
    """A grant on an object is stored as its type and key: deleted with the object, a new object
    with the same key (SQLite reuses the largest key) would inherit it."""
    store, s, authz = w.store, w.session, w.authz
    alice = s.get(User, 1)
    for revoke in (False, True):
        s.add(Document(id=100, org_id=9))
        s.commit()
        doc = s.get(Document, 100)
        store.grant(alice, permission="doc.delete", scope=doc)
        s.commit()
        if revoke:
            store.revoke_scope(doc)
        s.delete(doc)
        s.commit()
        reborn = Document(id=100, org_id=9)
        s.add(reborn)
        s.commit()
        assert authz.check(alice, "doc.delete", reborn) is not revoke
        s.delete(reborn)
        store.revoke_scope(("Document", 100))  # the left-over grant of the first round
        s.commit()


def test_grant_again_updates_the_window_without_a_second_row(w: World) -> None:
    store, alice = w.store, w.session.get(User, 1)
    first = dt.datetime(2031, 1, 1, 12, 0)
    store.grant(alice, permission="doc.read", scope=("org", 1), expires_at=first)
    later = dt.datetime(2032, 6, 1, 8, 30)
    start = dt.datetime(2020, 1, 1)
    store.grant(alice, permission="doc.read", scope=("org", 1), valid_from=start, expires_at=later)
    [row] = users_permissions(w)
    assert row[2:] == ("org", "1", start, later)
    store.grant(alice, permission="doc.read", scope=("org", 1))  # no window: cleared
    [row] = users_permissions(w)
    assert row[4:] == (None, None)
    store.grant(alice, permission="doc.read", scope=("org", 2))  # another scope: another row
    assert len(users_permissions(w)) == 2
    assert [a[1] for a in audit(w, 4)] == ["grant"] * 4


def test_revoking_what_is_not_granted_is_an_audited_no_op(w: World) -> None:
    store, alice = w.store, w.session.get(User, 1)
    store.grant(alice, permission="doc.read", scope=("org", 1))
    before = w.session_counts()
    store.revoke(alice, permission="doc.read")  # granted in org 1 only, not globally
    store.revoke(alice, permission="doc.edit", scope=("org", 1))
    after = w.session_counts()
    assert after["bastion_audit"] == before["bastion_audit"] + 2
    assert {k: v for k, v in after.items() if k != "bastion_audit"} == {
        k: v for k, v in before.items() if k != "bastion_audit"
    }
    assert audit(w, 2) == [
        ("admin", "revoke", "User 1", "permission doc.read", "", None),
        ("admin", "revoke", "User 1", "permission doc.edit", "org:1", None),
    ]


def test_times_are_stored_as_naive_utc(w: World) -> None:
    store, alice = w.store, w.session.get(User, 1)
    tokyo = dt.timezone(dt.timedelta(hours=9))
    store.grant(
        alice,
        permission="doc.read",
        valid_from=dt.datetime(2030, 1, 1, 9, 0, tzinfo=tokyo),
        expires_at=dt.datetime(2030, 1, 2, 0, 0, 0, 250000, tzinfo=UTC),
    )
    store.grant(alice, permission="doc.edit", valid_from=dt.datetime(2030, 1, 1, 9, 0))  # naive
    rows = users_permissions(w)
    assert [r[4:] for r in rows] == [
        (dt.datetime(2030, 1, 1, 0, 0), dt.datetime(2030, 1, 2, 0, 0, 0, 250000)),
        (dt.datetime(2030, 1, 1, 9, 0), None),
    ]


def test_audit_time_is_utc(w: World) -> None:
    if w.engine.dialect.name == "postgresql":
        w.session.execute(sa.text("SET TIME ZONE 'Asia/Tokyo'"))  # a session far from UTC
    w.store.create_group("clock")
    [row] = w.store.audit_log(1)
    now = dt.datetime.now(UTC).replace(tzinfo=None)
    assert abs(row.at - now) < dt.timedelta(minutes=5), (row.at, now)


@pytest.mark.parametrize(
    ("scope", "stored"),
    [
        (None, ("", "")),
        (("org", 7), ("org", "7")),
        (("org", "07"), ("org", "07")),  # strings are kept as they are
        (("tenant", uuid.UUID(int=255)), ("tenant", "0" * 30 + "ff")),
    ],
)
def test_scope_of(scope: Any, stored: tuple[str, str]) -> None:
    assert scope_of(scope) == stored


def test_scope_of_objects(w: World) -> None:
    s = w.session
    assert scope_of(s.get(Document, 3)) == ("Document", "3")
    assert scope_of(s.get(Invoice, 7)) == ("Document", "7")
    assert scope_of(s.get(Page, "home")) == ("Page", "home")
    with pytest.raises(InvalidArgument):
        scope_of(Document(id=99))  # not persistent
    for bad in (("", 1), ("x" * 65, 1), ("org\n", 1), ("org", None), ("org", 1.5), 42, "org"):
        with pytest.raises(InvalidArgument):
            scope_of(bad)


def test_string_and_uuid_user_keys(w: World) -> None:
    s = w.session
    member = Member(ident=uuid.UUID(int=1), email="m@example.com")
    s.add(member)
    s.commit()
    store = GrantStore(s, uuid_grants, actor="root")
    store.create_permission("folder.open")
    store.grant(member, permission="folder.open", scope=("tenant", "acme"))
    [row] = edges(w, uuid_grants.users[Member].permissions)
    assert row[0] == uuid.UUID(int=1)
    assert row[2:4] == ("tenant", "acme")
    assert audit_rows_of(s, uuid_grants.audit)[-1][:4] == (
        "root",
        "grant",
        f"Member {uuid.UUID(int=1)}",
        "permission folder.open",
    )
    w.store.grant(s.get(ServiceAccount, "1"), permission="doc.read")
    [row] = edges(w, grants.users[ServiceAccount].permissions)
    assert row[0] == "1"
    assert users_permissions(w) == []  # user 1 is not service account "1"


def audit_rows_of(session: Session, table: sa.Table) -> list[tuple[Any, ...]]:
    rows = session.execute(sa.select(table).order_by(table.c.id)).all()
    return [tuple(getattr(r, c) for c in AUDIT) for r in rows]


# -- effective permissions --------------------------------------------------------------------


def test_effective_permissions_lists_every_tier(w: World) -> None:
    store, s = w.store, w.session
    past, future = _times(s)
    store.create_bundle("readers", ["doc.read", "reports.view"])
    store.create_bundle("editors", ["doc.edit"])
    store.create_group("staff")
    store.grant("staff", permission="doc.delete", scope=("org", 1))
    store.grant("staff", bundle="editors")
    alice = s.get(User, 1)
    store.grant(alice, permission="doc.read", scope=("org", 2))
    store.grant(alice, bundle="readers")
    store.add_member("staff", alice)
    store.grant(alice, permission="folder.open", expires_at=past)  # expired: not listed
    store.grant(alice, permission="doc.edit", valid_from=future)  # not yet: not listed
    assert store.effective_permissions(alice) == [
        ("doc.delete", ("org", "1"), "group"),
        ("doc.edit", ("", ""), "group bundle"),
        ("doc.read", ("", ""), "bundle"),
        ("doc.read", ("org", "2"), "direct"),
        ("reports.view", ("", ""), "bundle"),
    ]
    assert store.effective_permissions(s.get(User, 2)) == []
    assert store.effective_permissions(User(id=99)) == []  # transient: no stored grants


def _times(session: Session) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(UTC)
    return now - dt.timedelta(days=1), now + dt.timedelta(days=1)


# -- bad input changes nothing ----------------------------------------------------------------


def _setup(store: GrantStore, s: Session) -> None:
    store.create_bundle("readers", ["doc.read"])
    store.create_group("staff")
    store.grant(s.get(User, 1), permission="doc.read")


BAD_CALLS: list[tuple[str, Callable[[GrantStore, Session], Any], type[BastionError]]] = [
    (
        "unknown permission",
        lambda st, s: st.grant(s.get(User, 1), permission="nope"),
        PermissionNotFound,
    ),
    ("unknown bundle", lambda st, s: st.grant(s.get(User, 1), bundle="nope"), InvalidArgument),
    ("unknown group", lambda st, s: st.add_member("nope", s.get(User, 1)), InvalidArgument),
    (
        "unknown group holder",
        lambda st, s: st.grant("nope", permission="doc.read"),
        InvalidArgument,
    ),
    (
        "revoke unknown",
        lambda st, s: st.revoke(s.get(User, 1), permission="nope"),
        PermissionNotFound,
    ),
    ("group to a group", lambda st, s: st.grant("staff", group="staff"), InvalidArgument),
    (
        "two things",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", bundle="readers"),
        InvalidArgument,
    ),
    ("nothing", lambda st, s: st.grant(s.get(User, 1)), InvalidArgument),
    ("transient user", lambda st, s: st.grant(User(id=50), permission="doc.read"), InvalidArgument),
    (
        "unregistered holder",
        lambda st, s: st.grant(s.get(Document, 1), permission="doc.read"),
        InvalidArgument,
    ),
    ("not a holder", lambda st, s: st.grant(42, permission="doc.read"), InvalidArgument),
    (
        "bad scope",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", scope=("org", None)),
        InvalidArgument,
    ),
    (
        "bad scope type",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", scope=("", 1)),
        InvalidArgument,
    ),
    (
        "bad expiry",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", expires_at="tomorrow"),
        InvalidArgument,
    ),
    ("quote in token", lambda st, s: st.create_permission("doc'read"), InvalidName),
    ("semicolon token", lambda st, s: st.create_permission("doc;drop"), InvalidName),
    ("space in token", lambda st, s: st.create_permission("doc read"), InvalidName),
    ("not a string", lambda st, s: st.create_permission(7), InvalidArgument),
    ("quote in label", lambda st, s: st.create_group("o'brien"), InvalidName),
    ("semicolon label", lambda st, s: st.create_bundle("a;b", ["doc.read"]), InvalidName),
    ("double quote", lambda st, s: st.create_group('say "hi"'), InvalidName),
    ("control label", lambda st, s: st.create_group("a\nb"), InvalidName),
    ("empty label", lambda st, s: st.create_group("  "), InvalidName),
    ("long label", lambda st, s: st.create_group("x" * 256), InvalidName),
    ("rename to bad", lambda st, s: st.rename("group", "staff", "st;aff"), InvalidName),
    (
        "rename to bad token",
        lambda st, s: st.rename("permission", "doc.read", "doc read"),
        InvalidName,
    ),
    ("rename unknown", lambda st, s: st.rename("bundle", "nope", "other"), InvalidArgument),
    ("rename kind", lambda st, s: st.rename("user", "a", "b"), InvalidArgument),
    ("delete unknown", lambda st, s: st.delete("permission", "nope"), PermissionNotFound),
    ("delete kind", lambda st, s: st.delete("role", "x"), InvalidArgument),
    ("duplicate permission", lambda st, s: st.create_permission("doc.read"), DuplicateName),
    ("duplicate bundle", lambda st, s: st.create_bundle("readers"), DuplicateName),
    ("duplicate group", lambda st, s: st.create_group("staff"), DuplicateName),
    (
        "rename to taken",
        lambda st, s: (
            st.rename("group", "staff", "staff2")
            or st.rename("bundle", "readers", "staff2")
            or st.create_group("staff2")
        ),
        DuplicateName,
    ),
    (
        "bundle with unknown",
        lambda st, s: st.create_bundle("new", ["doc.read", "nope"]),
        PermissionNotFound,
    ),
    (
        "add unknown to bundle",
        lambda st, s: st.add_to_bundle("readers", "doc.edit", "nope"),
        PermissionNotFound,
    ),
    (
        "remove unknown",
        lambda st, s: st.remove_from_bundle("readers", "doc.read", "nope"),
        PermissionNotFound,
    ),
    ("add to unknown bundle", lambda st, s: st.add_to_bundle("nope", "doc.read"), InvalidArgument),
    # found by review: these raised AttributeError, TypeError or the driver's own error
    (
        "a class as scope",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", scope=User),
        InvalidArgument,
    ),
    (
        "a column as scope",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", scope=User.name),
        InvalidArgument,
    ),
    ("revoke a class's scope", lambda st, s: st.revoke_scope(Document), InvalidArgument),
    (
        "a token that is no string",
        lambda st, s: st.create_bundle("b2", ["doc.read", 1]),
        InvalidArgument,
    ),
    ("no token list", lambda st, s: st.create_bundle("b3", None), InvalidArgument),
    ("one string as the tokens", lambda st, s: st.create_bundle("b4", "doc.read"), InvalidArgument),
    ("add a number", lambda st, s: st.add_to_bundle("readers", 5), InvalidArgument),
    ("remove a number", lambda st, s: st.remove_from_bundle("readers", 5), InvalidArgument),
    ("rename a list", lambda st, s: st.rename("group", ["staff"], "other"), InvalidArgument),
    # scope ids the column cannot hold (PostgreSQL raised DataError) or no row can have
    (
        "scope id too long",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", scope=("org", "x" * 256)),
        InvalidArgument,
    ),
    (
        "empty scope id",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", scope=("org", "")),
        InvalidArgument,
    ),
    (
        "control scope id",
        lambda st, s: st.grant(s.get(User, 1), permission="doc.read", scope=("org", "1\n")),
        InvalidArgument,
    ),
]


def test_bad_input_raises_and_changes_nothing(w: World) -> None:
    s, store = w.session, w.store
    _setup(store, s)
    store.create_group("staff2")
    s.commit()
    for name, call, error in BAD_CALLS:
        before = w.counts()
        with pytest.raises(error) as raised:
            call(store, s)
        assert isinstance(raised.value, BastionError), name
        s.rollback()  # whatever the caller does after an error
        assert w.counts() == before, name


def test_a_long_audit_text_is_shortened_not_refused(w: World) -> None:
    """A bundle of many permissions: its audit row's object (the tokens joined) overflowed the
    255-character column, and PostgreSQL refused the whole change."""
    tokens = [f"reports.section.{n:03d}" for n in range(20)]
    for token in tokens:
        w.store.create_permission(token)
    bundle = w.store.create_bundle("everything", tokens)
    assert len(bundle.permissions) == 20
    (row,) = audit(w)
    assert row[1] == "create bundle"
    assert len(row[3]) == 255
    assert row[3].endswith("…")


def test_bundle_tokens_may_come_from_any_iterable(w: World) -> None:
    """A generator was used up by the audit row's join: the bundle was created empty."""
    bundle = w.store.create_bundle("gen", (t for t in ("doc.read", "doc.edit")))
    assert sorted(p.token for p in bundle.permissions) == ["doc.edit", "doc.read"]


def test_bad_input_inside_the_callers_transaction_keeps_earlier_work(w: World) -> None:
    """Inside an open transaction the store uses a SAVEPOINT: the failed call is undone, the
    caller's earlier changes in the same transaction are not."""
    s, store = w.session, w.store
    _setup(store, s)
    store.create_group("staff2")
    s.commit()
    store.grant(s.get(User, 2), permission="doc.edit")  # the caller's pending work
    for name, call, error in BAD_CALLS:
        before = w.session_counts()
        with pytest.raises(error):
            call(store, s)
        assert w.session_counts() == before, name
    s.commit()
    assert w.counts() == before
    assert w.counts()["bastion_users_permissions"] == 2


def test_failed_bundle_creation_leaves_no_bundle(w: World) -> None:
    with pytest.raises(PermissionNotFound):
        w.store.create_bundle("half", ["doc.read", "doc.nope"])
    w.session.rollback()
    assert w.session.scalar(sa.select(sa.func.count()).select_from(grants.Bundle)) == 0
    assert w.counts()["bastion_bundle_permissions"] == 0
    assert w.store.create_bundle("half", ["doc.read"]).label == "half"  # the name is free


def test_pending_user_is_flushed_first(w: World) -> None:
    s = w.session
    newcomer = User(id=60)
    s.add(newcomer)
    w.store.grant(newcomer, permission="doc.read")
    s.commit()
    assert w.counts()["bastion_users_permissions"] == 1


# -- units of work ------------------------------------------------------------------------------


def test_each_change_commits_when_no_transaction_is_open(w: World) -> None:
    w.session.commit()
    assert not w.session.in_transaction()
    w.store.create_group("g")
    assert w.counts()["bastion_groups"] == 1  # visible on another connection


def test_inside_a_transaction_the_caller_commits_or_rolls_back(w: World) -> None:
    s, store = w.session, w.store
    before = w.counts()
    s.begin()
    store.create_group("g")
    store.grant(s.get(User, 1), permission="doc.read")
    assert w.counts() == before  # not committed yet
    s.rollback()
    assert w.counts() == before
    with s.begin():
        store.create_group("g")
        store.grant(s.get(User, 1), permission="doc.read")
    counts = w.counts()
    assert counts["bastion_groups"] == 1
    assert counts["bastion_users_permissions"] == 1
    assert counts["bastion_audit"] == before["bastion_audit"] + 2


def test_changes_are_visible_to_other_sessions_after_commit(w: World) -> None:
    w.store.grant(w.session.get(User, 1), permission="doc.read")
    with Session(w.engine) as other:
        assert GrantStore(other, grants).effective_permissions(other.get(User, 1)) == []
    w.session.commit()
    with Session(w.engine) as other:
        assert GrantStore(other, grants).effective_permissions(other.get(User, 1)) == [
            ("doc.read", ("", ""), "direct")
        ]


# -- conflicts with concurrent transactions ------------------------------------------------------


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def _failing_upsert(store: GrantStore, failures: int, sqlstate: str = "40001") -> list[int]:
    """Make ``store._upsert`` fail ``failures`` times like PostgreSQL does, then work."""
    calls: list[int] = []
    real = store._upsert

    def upsert(*args: Any) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise sa.exc.OperationalError("INSERT ...", {}, _Orig(sqlstate))
        real(*args)

    store._upsert = upsert  # type: ignore[method-assign]
    return calls


def test_a_change_in_its_own_transaction_is_retried(w: World) -> None:
    s, store = w.session, w.store
    alice = s.get(User, 1)
    s.commit()
    calls = _failing_upsert(store, RETRIES - 1)
    before = w.counts()
    store.grant(alice, permission="doc.read")
    assert len(calls) == RETRIES
    assert not s.in_transaction()  # committed by the store
    after = w.counts()
    assert after["bastion_users_permissions"] == before["bastion_users_permissions"] + 1
    assert after["bastion_audit"] == before["bastion_audit"] + 1  # one audit row, not three


@pytest.mark.parametrize(
    ("sqlstate", "reason"), [("40001", "serialization failure"), ("40P01", "deadlock")]
)
def test_a_lost_change_raises_grant_conflict(w: World, sqlstate: str, reason: str) -> None:
    s, store = w.session, w.store
    alice = s.get(User, 1)
    s.commit()
    before = w.counts()
    calls = _failing_upsert(store, RETRIES, sqlstate)
    with pytest.raises(GrantConflict) as raised:  # retried, then given up
        store.grant(alice, permission="doc.read")
    assert len(calls) == RETRIES
    assert (raised.value.method, raised.value.reason) == ("grant", reason)
    assert isinstance(raised.value, BastionError)
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)
    calls.clear()
    s.get(User, 2)  # now inside the caller's transaction: no retry
    with pytest.raises(GrantConflict):
        store.grant(alice, permission="doc.read")
    assert len(calls) == 1
    s.rollback()
    assert w.counts() == before


def test_other_database_errors_are_not_conflicts(w: World) -> None:
    alice = w.session.get(User, 1)
    w.session.commit()
    calls = _failing_upsert(w.store, 1, "23505")
    with pytest.raises(sa.exc.OperationalError):
        w.store.grant(alice, permission="doc.read")
    assert len(calls) == 1
