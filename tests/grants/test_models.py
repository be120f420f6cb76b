"""bastion.grants.models: the tables on the application's base, link tables per user model, keys of
every type, and ON DELETE CASCADE (SQLite with foreign keys on, and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bastion import InvalidArgument, PolicyError, UnmappedClass
from bastion.grants import GLOBAL, grant_models, scope_key

from .schema import (
    Base,
    Document,
    Folder,
    Member,
    ServiceAccount,
    User,
    UuidBase,
    World,
    grants,
    uuid_grants,
)

LINKS = {
    "bastion_users_permissions": ("users.id", "bastion_permissions.id", "permission_id"),
    "bastion_users_bundles": ("users.id", "bastion_bundles.id", "bundle_id"),
    "bastion_users_groups": ("users.id", "bastion_groups.id", "group_id"),
    "bastion_service_accounts_permissions": (
        "service_accounts.name",
        "bastion_permissions.id",
        "permission_id",
    ),
    "bastion_service_accounts_bundles": (
        "service_accounts.name",
        "bastion_bundles.id",
        "bundle_id",
    ),
    "bastion_service_accounts_groups": ("service_accounts.name", "bastion_groups.id", "group_id"),
    "acl_members_permissions": ("members.member_uuid", "acl_permissions.id", "permission_id"),
    "acl_members_bundles": ("members.member_uuid", "acl_bundles.id", "bundle_id"),
    "acl_members_groups": ("members.member_uuid", "acl_groups.id", "group_id"),
}
EDGE_COLUMNS = {"scope_type", "scope_id", "valid_from", "expires_at"}


# -- tables on the application's own base --------------------------------------------------


def test_tables_live_on_the_application_base_only() -> None:
    names = set(Base.metadata.tables)
    expected = {
        "bastion_permissions",
        "bastion_bundles",
        "bastion_groups",
        "bastion_bundle_permissions",
        "bastion_group_permissions",
        "bastion_group_bundles",
        "bastion_audit",
        *(n for n in LINKS if n.startswith("bastion_")),
    }
    assert expected <= names
    assert not any(n.startswith("acl_") for n in names)
    assert {n for n in UuidBase.metadata.tables if n.startswith("acl_")} == {
        "acl_permissions",
        "acl_bundles",
        "acl_groups",
        "acl_bundle_permissions",
        "acl_group_permissions",
        "acl_group_bundles",
        "acl_audit",
        *(n for n in LINKS if n.startswith("acl_")),
    }
    assert grants.Permission.__table__.metadata is Base.metadata
    assert grants.Permission is not uuid_grants.Permission


def test_grant_models_is_idempotent_per_base_and_prefix() -> None:
    assert grant_models(Base) is grants
    assert grant_models(UuidBase, prefix="acl_") is uuid_grants


def test_a_second_prefix_builds_a_second_set_of_tables() -> None:
    class LocalBase(DeclarativeBase):
        pass

    first = grant_models(LocalBase, prefix="a_")
    second = grant_models(LocalBase, prefix="b_")
    assert first is not second
    assert {"a_permissions", "b_permissions", "a_audit", "b_audit"} <= set(
        LocalBase.metadata.tables
    )


@pytest.mark.parametrize("bad", [object, object(), "Base", None])
def test_grant_models_needs_a_declarative_base(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="declarative base"):
        grant_models(bad)


def test_entities_and_columns() -> None:
    permission = grants.Permission.__table__
    assert {c.name for c in permission.c} == {"id", "token", "description"}
    assert permission.c.token.unique
    assert not permission.c.token.nullable
    assert grants.Bundle.__table__.c.label.unique
    assert grants.Group.__table__.c.label.unique
    assert {c.name for c in grants.audit.c} == {
        "id",
        "at",
        "actor",
        "action",
        "subject",
        "object",
        "scope",
        "reason",
    }
    # bundles are definitions: bundle_permissions carries neither scope nor validity
    assert {c.name for c in grants.bundle_permissions.c} == {"bundle_id", "permission_id"}
    for table in (grants.group_permissions, grants.group_bundles):
        assert {c.name for c in table.c} >= EDGE_COLUMNS


def test_link_table_key_types_follow_the_user_primary_key() -> None:
    assert isinstance(grants.users[User].permissions.c.user_id.type, sa.Integer)
    sa_type = grants.users[ServiceAccount].groups.c.user_id.type
    assert isinstance(sa_type, sa.String)
    assert sa_type.length == 64
    assert isinstance(uuid_grants.users[Member].bundles.c.user_id.type, sa.Uuid)
    assert uuid_grants.users[Member].pk is Member.__table__.c.member_uuid


# -- the schema in the database ---------------------------------------------------------------


def test_schema_in_the_database(w: World) -> None:
    inspector = sa.inspect(w.engine)
    for name, (user_ref, right_ref, right_column) in LINKS.items():
        pk = inspector.get_pk_constraint(name)["constrained_columns"]
        assert set(pk) == {"user_id", right_column, "scope_type", "scope_id"}, name
        fks = {
            f"{fk['referred_table']}.{fk['referred_columns'][0]}": fk
            for fk in inspector.get_foreign_keys(name)
        }
        assert set(fks) == {user_ref, right_ref}, name
        for fk in fks.values():
            assert (fk["options"].get("ondelete") or "").upper() == "CASCADE", (name, fk)
        indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes(name)}
        assert (right_column, "user_id") in indexes, name  # reverse lookups
    for name, left, right in [
        ("bastion_bundle_permissions", "bundle_id", "permission_id"),
        ("bastion_group_permissions", "group_id", "permission_id"),
        ("bastion_group_bundles", "group_id", "bundle_id"),
    ]:
        pk = set(inspector.get_pk_constraint(name)["constrained_columns"])
        assert {left, right} <= pk
        for fk in inspector.get_foreign_keys(name):
            assert (fk["options"].get("ondelete") or "").upper() == "CASCADE", (name, fk)
        indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes(name)}
        assert (right, left) in indexes
    unique = {
        tuple(u["column_names"]) for u in inspector.get_unique_constraints("bastion_permissions")
    } | {
        tuple(ix["column_names"])
        for ix in inspector.get_indexes("bastion_permissions")
        if ix.get("unique")
    }
    assert ("token",) in unique


# -- user models ------------------------------------------------------------------------------


def test_register_user_is_idempotent_and_adds_relationships() -> None:
    links = grants.users[User]
    assert grants.register_user(User) is links
    assert grants.links_for(User) is links
    assert grants.links_for(ServiceAccount) is grants.users[ServiceAccount]
    assert grants.links_for(Document) is None
    for attr in ("granted_permissions", "granted_bundles", "user_groups"):
        assert attr in sa.inspect(User).relationships
        assert attr in sa.inspect(Member).relationships


def test_subclasses_use_the_links_of_their_registered_base() -> None:
    class LocalBase(DeclarativeBase):
        pass

    class Person(LocalBase):
        __tablename__ = "people"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(default="person")
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}

    class Staff(Person):
        __mapper_args__ = {"polymorphic_identity": "staff"}

    models = grant_models(LocalBase)
    links = models.register_user(Person, table_prefix="person")
    assert models.links_for(Staff) is links
    assert links.permissions.name == "bastion_person_permissions"
    # registering the subclass too shares the base's tables (SQLAlchemy refused a second set)
    assert models.register_user(Staff) is links
    with pytest.raises(InvalidArgument, match="inherits the link tables of Person"):
        models.register_user(Staff, table_prefix="staff")


def test_register_user_errors() -> None:
    class LocalBase(DeclarativeBase):
        pass

    class Pair(LocalBase):
        __tablename__ = "pairs"
        a: Mapped[int] = mapped_column(primary_key=True)
        b: Mapped[int] = mapped_column(primary_key=True)

    class Plain:
        pass

    models = grant_models(LocalBase)
    with pytest.raises(UnmappedClass):
        models.register_user(Plain)
    with pytest.raises(PolicyError, match="single-column primary key"):
        models.register_user(Pair)
    with pytest.raises(PolicyError, match="not a column"):
        models.register_user(Pair, primary_key="nope")
    assert models.users == {}
    links = models.register_user(Pair, primary_key="a")  # named explicitly: accepted
    assert links.pk is Pair.__table__.c.a


def test_scope_key() -> None:
    assert scope_key(42) == "42"
    assert scope_key(-3) == "-3"
    assert scope_key("org-a") == "org-a"
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert scope_key(u) == "12345678123456781234567812345678"
    for bad in (None, True, 1.5, b"x", (1,)):
        with pytest.raises(InvalidArgument):
            scope_key(bad)
    assert GLOBAL == ("", "")


def test_viewonly_relationships_read_the_links(w: World) -> None:
    s, store = w.session, w.store
    store.create_bundle("readers", ["doc.read", "reports.view"])
    store.create_group("staff")
    store.grant("staff", permission="doc.edit")
    store.grant("staff", bundle="readers", scope=("org", 1))
    alice = s.get(User, 1)
    store.grant(alice, permission="doc.delete")
    store.grant(alice, bundle="readers")
    store.add_member("staff", alice)
    s.commit()
    assert [p.token for p in alice.granted_permissions] == ["doc.delete"]
    assert [b.label for b in alice.granted_bundles] == ["readers"]
    [staff] = alice.user_groups
    assert staff.label == "staff"
    assert [p.token for p in staff.permissions] == ["doc.edit"]
    [readers] = staff.bundles
    assert sorted(p.token for p in readers.permissions) == ["doc.read", "reports.view"]
    assert repr(readers) == "<Bundle 'readers'>"
    assert repr(staff) == "<Group 'staff'>"


# -- ON DELETE CASCADE ----------------------------------------------------------------------


def _grant_everything(w: World) -> None:
    store, s = w.store, w.session
    store.create_bundle("readers", ["doc.read", "doc.edit"])
    store.create_group("staff")
    store.grant("staff", permission="doc.read")
    store.grant("staff", bundle="readers", scope=("org", 1))
    for who in (s.get(User, 1), s.get(User, 2), s.get(ServiceAccount, "ci")):
        store.grant(who, permission="doc.read")
        store.grant(who, permission="doc.edit", scope=("org", 2))
        store.grant(who, bundle="readers")
        store.add_member("staff", who)
    s.commit()


def _link_rows(w: World, table: str, **where: object) -> int:
    t = sa.Table(table, sa.MetaData(), autoload_with=w.engine)
    with w.engine.connect() as c:
        query = sa.select(sa.func.count()).select_from(t)
        query = query.where(*(t.c[k] == v for k, v in where.items()))
        return int(c.scalar(query) or 0)


def test_deleting_a_user_removes_its_links(w: World) -> None:
    _grant_everything(w)
    before = w.counts()
    w.session.delete(w.session.get(User, 1))
    w.session.commit()
    after = w.counts()
    for kind in ("permissions", "bundles", "groups"):
        assert _link_rows(w, f"bastion_users_{kind}", user_id=1) == 0
        assert _link_rows(w, f"bastion_users_{kind}", user_id=2) > 0  # the others stay
        table = f"bastion_users_{kind}"
        assert after[table] == before[table] - (2 if kind == "permissions" else 1)
        sa_table = f"bastion_service_accounts_{kind}"
        assert after[sa_table] == before[sa_table]
    assert after["users"] == before["users"] - 1


def test_deleting_a_service_account_in_sql_removes_its_links(w: World) -> None:
    _grant_everything(w)
    with w.engine.begin() as c:
        c.execute(sa.delete(ServiceAccount.__table__).where(ServiceAccount.name == "ci"))
    for kind in ("permissions", "bundles", "groups"):
        assert _link_rows(w, f"bastion_service_accounts_{kind}") == 0
        assert _link_rows(w, f"bastion_users_{kind}") > 0


@pytest.mark.parametrize(
    ("entity", "name", "emptied"),
    [
        (
            "Permission",
            "doc.read",
            {"bastion_group_permissions": 0, "bastion_users_permissions": 2},
        ),
        (
            "Bundle",
            "readers",
            {
                "bastion_group_bundles": 0,
                "bastion_users_bundles": 0,
                "bastion_bundle_permissions": 0,
            },
        ),
        (
            "Group",
            "staff",
            {"bastion_group_permissions": 0, "bastion_group_bundles": 0, "bastion_users_groups": 0},
        ),
    ],
)
def test_deleting_a_permission_bundle_or_group_in_sql_cascades(
    w: World, entity: str, name: str, emptied: dict[str, int]
) -> None:
    """A plain SQL DELETE (not the store): the foreign keys' ON DELETE CASCADE does the work."""
    _grant_everything(w)
    cls = getattr(grants, entity)
    column = cls.token if entity == "Permission" else cls.label
    with w.engine.begin() as c:
        assert c.execute(sa.delete(cls).where(column == name)).rowcount == 1
    counts = w.counts()
    for table, rows in emptied.items():
        assert counts[table] == rows, table
    if entity == "Permission":
        # doc.edit is still held: directly in org 2 and through the bundle
        assert _link_rows(w, "bastion_bundle_permissions") == 1
        assert _link_rows(w, "bastion_service_accounts_permissions") == 1


def test_uuid_member_links_cascade(engine: sa.engine.Engine) -> None:
    from .schema import world

    with world(engine) as built:
        store = built.store_for(uuid_grants)
        store.create_permission("folder.open")
        store.create_group("crew")
        store.grant("crew", permission="folder.open")
        m1, m2 = Member(ident=uuid.uuid4()), Member(ident=uuid.uuid4())
        built.session.add_all([m1, m2, Folder(id=uuid.uuid4(), tenant="t")])
        built.session.commit()
        for m in (m1, m2):
            store.add_member("crew", m)
            store.grant(m, permission="folder.open", scope=("tenant", "t"))
        built.session.commit()
        built.session.delete(m1)
        built.session.commit()
        for kind in ("permissions", "groups"):
            assert _link_rows(built, f"acl_members_{kind}", user_id=m1.ident) == 0
            assert _link_rows(built, f"acl_members_{kind}", user_id=m2.ident) == 1
