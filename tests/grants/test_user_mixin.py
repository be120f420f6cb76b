"""``GrantsUserMixin`` / ``grants.UserMixin``: the user model's link tables are created when it
is mapped, with its primary key named (by attribute name or ``Column``) or detected, on a
``DeclarativeBase`` and on Flask-SQLAlchemy's metaclass-based ``db.Model``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion import Authorizer, Policy, PolicyError
from bastion.grants import GrantStore, GrantsUserMixin, grant_models, holds


def _policy(grants: Any, user: type) -> Policy:
    policy = Policy(["reports.view"])
    policy.allow("reports.view", subject=user, when=holds(grants, "reports.view"))
    return policy


def _grant_and_check(engine: sa.Engine, grants: Any, user: Any, other: Any) -> None:
    grants.base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([user, other])
        session.commit()
        store = GrantStore(session, grants)
        store.create_permission("reports.view")
        store.grant(user, permission="reports.view")
        session.commit()
        authz = Authorizer(_policy(grants, type(user)), session)
        assert authz.check(user, "reports.view")
        assert not authz.check(other, "reports.view")


def test_primary_key_named_by_attribute() -> None:
    class Base(DeclarativeBase):
        pass

    grants = grant_models(Base)

    class Account(Base, grants.UserMixin):
        __tablename__ = "accounts"
        primary_key_column = "ident"
        ident: Mapped[str] = mapped_column("account_name", primary_key=True)

    links = grants.links_for(Account)
    assert links is not None
    assert links.pk is Account.__table__.c.account_name
    assert {"bastion_accounts_permissions", "bastion_accounts_groups"} <= set(Base.metadata.tables)
    _grant_and_check(sa.create_engine("sqlite://"), grants, Account(ident="a"), Account(ident="b"))


def test_primary_key_named_by_column_and_mixin_first() -> None:
    class Base(DeclarativeBase):
        pass

    grants = grant_models(Base)

    class Robot(GrantsUserMixin, Base):  # the plain mixin, bound with __grants__
        __tablename__ = "robots"
        __grants__ = grants
        # KegBouncer's spelling: the key column, declared and named at once
        primary_key_column = sa.Column("name", sa.String(40), primary_key=True)

    links = grants.links_for(Robot)
    assert links is not None
    assert links.pk is Robot.__table__.c.name
    robots = Robot(primary_key_column="r2"), Robot(primary_key_column="c3")
    _grant_and_check(sa.create_engine("sqlite://"), grants, *robots)


def test_primary_key_detected_uuid_and_subclass_shares_the_tables() -> None:
    class Base(DeclarativeBase):
        pass

    grants = grant_models(Base, prefix="acl_")

    class Person(Base, grants.UserMixin):
        __tablename__ = "people"
        id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(default="person")
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}

    class Staff(Person):
        __mapper_args__ = {"polymorphic_identity": "staff"}

    assert grants.links_for(Staff) is grants.links_for(Person)
    assert set(grants.users) == {Person}
    _grant_and_check(
        sa.create_engine("sqlite://"), grants, Staff(id=uuid.uuid4()), Person(id=uuid.uuid4())
    )


def test_mixin_without_models_is_a_clear_error() -> None:
    class Base(DeclarativeBase):
        pass

    with pytest.raises(PolicyError, match="__grants__"):

        class Lost(Base, GrantsUserMixin):
            __tablename__ = "lost"
            id: Mapped[int] = mapped_column(primary_key=True)


def test_flask_sqlalchemy_db_model() -> None:
    flask = pytest.importorskip("flask")
    flask_sqlalchemy = pytest.importorskip("flask_sqlalchemy")
    db = flask_sqlalchemy.SQLAlchemy()  # db.Model: mapped by its metaclass, after the hook
    grants = grant_models(db.Model)

    class Member(db.Model, grants.UserMixin):  # type: ignore[name-defined, misc]
        __tablename__ = "members"
        id = sa.Column(sa.Integer, primary_key=True)

    assert grants.links_for(Member) is not None
    app = flask.Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    with app.app_context():
        _grant_and_check(db.engine, grants, Member(id=1), Member(id=2))
