"""bastion.roles: static roles declared in code, their balrog-style entry points, and role grants
compiled into the rule algebra (Python check == SQL filter, on SQLite and PostgreSQL).

Every database test compares three answers with an independent oracle written in plain Python:
``Authorizer.check`` on loaded objects (no query is sent), ``Authorizer.check`` on expired objects
(one ``SELECT EXISTS``) and ``Authorizer.filter``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Hashable, Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    make_transient_to_detached,
    mapped_column,
    relationship,
    selectinload,
)

from bastion import (
    Authorizer,
    BastionError,
    DuplicateName,
    DuplicateRule,
    InvalidArgument,
    InvalidName,
    Permission,
    PermissionNotFound,
    Policy,
    PolicyError,
    Role,
    RoleGrant,
    RoleNotFound,
    RolePolicy,
    RuleNotTranslatable,
    UnknownAttribute,
    UnusedPermission,
    ctx,
    it,
    subject,
    target,
)
from bastion.rules.to_python import to_python

# -- models ----------------------------------------------------------------------------------


class Base(DeclarativeBase):
    """This module's tables only."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    role: Mapped[str | None]
    #: several role names at once, for ``many=True`` (a subject value: never read in SQL)
    role_names: Mapped[list[str | None] | None] = mapped_column(sa.JSON)
    memberships: Mapped[list[Membership]] = relationship(order_by="Membership.org_id")

    def __repr__(self) -> str:
        return f"User({self.id}, {self.role!r})"


class Membership(Base):
    """The user's role in one organisation."""

    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str | None]


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    author_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    org_id: Mapped[int | None]
    is_published: Mapped[bool | None]
    author: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"Article({self.id})"


# -- the roles of the examples -----------------------------------------------------------------

read_published = Permission("article.read", when=target.is_published)
read = Permission("article.read")
comment = Permission("article.comment")
edit_own = Permission("article.edit", when=target.author_id == subject.id)
edit = Permission("article.edit")
delete = Permission("article.delete")

ROLES = RolePolicy(
    [
        Role("anonymous", [read_published]),
        Role("user", [read, comment]),
        Role("author", [read, comment, edit_own]),
        Role("editor", [read, comment, edit, delete]),
    ],
    name="articles",
)
PERMISSIONS = ("article.read", "article.comment", "article.edit", "article.delete")


def role_allows(role: object, article: Article, user: User, permission: Hashable) -> bool:
    """The oracle for ROLES, written out by hand."""
    if permission == "article.read":
        return role in ("user", "author", "editor") or (
            role == "anonymous" and article.is_published is True
        )
    if permission == "article.comment":
        return role in ("user", "author", "editor")
    if permission == "article.edit":
        return role == "editor" or (
            role == "author" and article.author_id is not None and article.author_id == user.id
        )
    return permission == "article.delete" and role == "editor"


# -- fixtures and helpers ------------------------------------------------------------------------

USERS = [
    {"id": 1, "role": "anonymous", "role_names": ["anonymous"]},
    {"id": 2, "role": "user", "role_names": ["user", "anonymous"]},
    {"id": 3, "role": "author", "role_names": ["anonymous", "author"]},
    {"id": 4, "role": "author", "role_names": []},
    {"id": 5, "role": "editor", "role_names": ["ghost", "editor"]},
    {"id": 6, "role": None, "role_names": None},
    {"id": 7, "role": "ghost", "role_names": [None, "ghost"]},
    {"id": 8, "role": "user", "role_names": [None, "author"]},
]
ARTICLES = [
    {"id": 1, "author_id": 3, "org_id": 10, "is_published": True},
    {"id": 2, "author_id": 4, "org_id": 10, "is_published": False},
    {"id": 3, "author_id": None, "org_id": 20, "is_published": None},
    {"id": 4, "author_id": 2, "org_id": 20, "is_published": True},
    {"id": 5, "author_id": 6, "org_id": None, "is_published": None},
    {"id": 6, "author_id": 8, "org_id": 30, "is_published": False},
]
MEMBERSHIPS = [
    {"user_id": 1, "org_id": 10, "role": "admin"},
    {"user_id": 1, "org_id": 20, "role": "guest"},
    {"user_id": 2, "org_id": 10, "role": "member"},
    {"user_id": 2, "org_id": 20, "role": None},
    {"user_id": 3, "org_id": 20, "role": "ghost"},
    {"user_id": 3, "org_id": 30, "role": "guest"},
    {"user_id": 5, "org_id": 30, "role": "admin"},
    {"user_id": 6, "org_id": 10, "role": "guest"},
]


@pytest.fixture
def db(session: Session, engine: Engine) -> Session:
    """The session, on a database holding USERS, ARTICLES and MEMBERSHIPS."""
    Base.metadata.create_all(engine)
    session.add_all([User(**row) for row in USERS])
    session.flush()
    session.add_all([Article(**row) for row in ARTICLES])
    session.add_all([Membership(**row) for row in MEMBERSHIPS])
    session.commit()
    return session


@contextlib.contextmanager
def no_queries(engine: Engine) -> Iterator[None]:
    """Fail if a statement reaches the database inside the block."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(str(args[2]))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert sent == [], sent


Oracle = Callable[[User, Article, Hashable], bool]


def assert_check_and_filter_agree(
    session: Session, policy: Policy, permissions: tuple[Hashable, ...], oracle: Oracle
) -> int:
    """check (loaded objects), check (expired objects) and filter all answer like ``oracle``.

    Returns how many (user, article, permission) triples were allowed, so that callers can see
    the test is not vacuous."""
    authz = Authorizer(policy, session)
    users = session.scalars(
        sa.select(User).options(selectinload(User.memberships)).order_by(User.id)
    ).all()
    articles = session.scalars(sa.select(Article).order_by(Article.id)).all()
    expected = {
        (u.id, a.id, p): oracle(u, a, p) for u in users for a in articles for p in permissions
    }
    assert len(set(expected.values())) == 2, "the data must both allow and deny"
    bind = session.get_bind()
    assert isinstance(bind, Engine)
    with no_queries(bind):  # the Python compiler answers on loaded objects
        for (u, a, p), want in zip(
            ((u, a, p) for u in users for a in articles for p in permissions),
            expected.values(),
            strict=True,
        ):
            assert authz.check(u, p, a) is want, ("check", u, a, p)
    for user in users:
        for p in permissions:
            stmt = authz.filter(user, p, sa.select(Article.id))
            got = set(session.scalars(stmt))
            assert got == {a.id for a in articles if expected[(user.id, a.id, p)]}, (user, p)
    session.expire_all()  # now every check is one SELECT EXISTS
    for user in users:
        for article in articles:
            for p in permissions:
                want = expected[(user.id, article.id, p)]
                assert authz.check(user, p, article) is want, ("exists", user, article, p)
    return sum(expected.values())


def registered(roles: RolePolicy = ROLES, **kwargs: Any) -> Policy:
    policy = Policy(name="test")
    roles.register(policy, subject=User, target=Article, role=subject.role, **kwargs)
    return policy


# =============================================================================================
# construction and validation


def test_role_holds_permissions_given_as_objects_or_names() -> None:
    role = Role("author", [read, "article.comment", edit_own])
    assert role.name == "author"
    assert list(role.permissions) == ["article.read", "article.comment", "article.edit"]
    assert role.permissions["article.read"] is read
    assert role.permissions["article.edit"] is edit_own
    assert isinstance(role.permissions["article.comment"], Permission)
    assert role.permissions["article.comment"].rule is None
    assert repr(role) == "Role('author', ['article.read', 'article.comment', 'article.edit'])"
    assert "when=" in repr(edit_own)
    assert repr(read) == "Permission('article.read')"


def test_duplicate_role_names_raise_duplicate_name() -> None:
    with pytest.raises(DuplicateName) as info:
        RolePolicy([Role("user", [read]), Role("admin", [read]), Role("user", [comment])])
    assert info.value.kind == "role"
    assert info.value.name == "user"
    assert isinstance(info.value, PolicyError)
    assert isinstance(info.value, BastionError)


@pytest.mark.parametrize(
    "permissions",
    [[read, read], [read, read_published], ["article.read", read], ["a.b", "a.b"]],
    ids=["same-object", "same-name", "name-and-object", "names"],
)
def test_duplicate_permissions_in_a_role_raise_duplicate_name(permissions: list[Any]) -> None:
    with pytest.raises(DuplicateName) as info:
        Role("user", permissions)
    assert info.value.kind == "permission"
    assert "user" in str(info.value)


def test_declared_permissions_must_cover_every_permission_a_role_names() -> None:
    with pytest.raises(PermissionNotFound) as info:
        RolePolicy(
            [Role("user", [read, comment])],
            permissions=["article.read"],
        )
    assert info.value.permission == "article.comment"
    assert info.value.known == ("article.read",)


def test_declared_permissions_that_no_role_holds_are_unused() -> None:
    with pytest.raises(UnusedPermission) as info:
        RolePolicy(
            [Role("user", [read])],
            permissions=["article.read", "article.delete", "article.post"],
        )
    assert info.value.permissions == ["article.delete", "article.post"]
    assert isinstance(info.value, PolicyError)


def test_declared_permissions_set_the_order_and_first_declaration_wins() -> None:
    roles = RolePolicy(
        [Role("anonymous", [read_published]), Role("user", [comment, read])],
        permissions=["article.comment", "article.read"],
    )
    assert list(roles.permissions) == ["article.comment", "article.read"]
    assert roles.permissions["article.read"] is read_published  # first declaration wins
    undeclared = RolePolicy([Role("anonymous", [read_published]), Role("user", [comment, read])])
    assert list(undeclared.permissions) == ["article.read", "article.comment"]
    assert undeclared.permissions["article.read"] is read_published


@pytest.mark.parametrize("name", ["", "a\nb", "tab\there", "x" * 201, None, 3, b"user"], ids=repr)
def test_invalid_role_names_raise_invalid_name(name: Any) -> None:
    with pytest.raises(InvalidName) as info:
        Role(name, [read])
    assert info.value.kind == "role"


def test_role_names_may_be_any_printable_text() -> None:
    assert Role("Chef de rédaction", [read]).name == "Chef de rédaction"
    assert Role("x" * 200, []).name == "x" * 200


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("article read", InvalidName),
        ("a;b", InvalidName),
        ("", InvalidName),
        (None, InvalidArgument),
    ],
)
def test_invalid_permission_names(name: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Permission(name)
    with pytest.raises(error):
        Role("user", [name])


def test_role_policy_takes_role_objects() -> None:
    with pytest.raises(InvalidArgument):
        RolePolicy(["user"])  # type: ignore[list-item]


def test_several_role_policies_coexist() -> None:
    a = RolePolicy([Role("user", [read])], name="a")
    b = RolePolicy([Role("user", [comment])], name="b")
    assert list(a.permissions) == ["article.read"]
    assert list(b.permissions) == ["article.comment"]
    assert a.roles["user"] is not b.roles["user"]
    assert repr(a) == "<RolePolicy 'a': roles ['user']>"


# =============================================================================================
# balrog-style entry points: check / filter


def _roles(*roles: Role, **kwargs: Any) -> RolePolicy:
    return RolePolicy(list(roles), **kwargs)


def test_check_calls_get_identity_then_get_role_then_role_check_with_the_extra_arguments() -> None:
    identity = SimpleNamespace(name="ada")
    calls = mock.Mock()
    calls.get_identity.return_value = identity
    calls.get_role.return_value = "user"

    class Recording(Role):
        def check(self, identity: Any, permission: Hashable, *args: Any, **kwargs: Any) -> bool:
            calls.role_check(identity, permission, *args, **kwargs)
            return super().check(identity, permission, *args, **kwargs)

    roles = _roles(
        Recording("user", [read]),
        Role("other", [comment]),
        get_identity=calls.get_identity,
        get_role=calls.get_role,
    )
    request = object()
    assert roles.check("article.read", request, 2, flag=True) is True
    assert calls.mock_calls == [
        mock.call.get_identity(request, 2, flag=True),
        mock.call.get_role(identity, request, 2, flag=True),
        mock.call.role_check(identity, "article.read", request, 2, flag=True),
    ]
    calls.reset_mock()
    assert roles.check("article.comment") is False  # the role lacks it
    assert calls.mock_calls == [
        mock.call.get_identity(),
        mock.call.get_role(identity),
        mock.call.role_check(identity, "article.comment"),
    ]


def test_filter_calls_get_identity_then_get_role_then_role_filter() -> None:
    identity = SimpleNamespace(name="ada")
    calls = mock.Mock()
    calls.get_identity.return_value = identity
    calls.get_role.return_value = "user"

    class Recording(Role):
        def filter(
            self, identity: Any, permission: Hashable, objects: Any, *args: Any, **kwargs: Any
        ) -> Any:
            calls.role_filter(identity, permission, objects, *args, **kwargs)
            return super().filter(identity, permission, objects, *args, **kwargs)

    roles = _roles(
        Recording("user", [read]), get_identity=calls.get_identity, get_role=calls.get_role
    )
    objects = [1, 2, 3]
    assert roles.filter("article.read", objects, "extra", key="value") is objects
    assert calls.mock_calls == [
        mock.call.get_identity("extra", key="value"),
        mock.call.get_role(identity, "extra", key="value"),
        mock.call.role_filter(identity, "article.read", objects, "extra", key="value"),
    ]


@pytest.mark.parametrize("name", ["ghost", None, "", 0, ("user",)], ids=repr)
def test_an_unknown_role_name_raises_role_not_found(name: Any) -> None:
    roles = _roles(
        Role("user", [read]),
        Role("editor", [read]),
        get_identity=lambda: "ada",
        get_role=lambda identity: name,
    )
    with pytest.raises(RoleNotFound) as info:
        roles.check("article.read")
    assert info.value.role == name
    assert info.value.known == ("user", "editor")
    with pytest.raises(RoleNotFound):
        roles.filter("article.read", [1])
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, PolicyError)


def test_an_unhashable_role_name_raises_role_not_found() -> None:
    roles = _roles(Role("user", [read]), get_identity=lambda: 1, get_role=lambda i: ["user"])
    with pytest.raises(RoleNotFound):
        roles.check("article.read")


def test_an_unknown_permission_raises_before_the_identity_is_looked_up() -> None:
    get_identity = mock.Mock()
    roles = _roles(Role("user", [read]), get_identity=get_identity, get_role=mock.Mock())
    for call in (lambda: roles.check("article.post"), lambda: roles.filter("article.post", [])):
        with pytest.raises(PermissionNotFound) as info:
            call()
        assert info.value.permission == "article.post"
        assert info.value.known == ("article.read",)
    with pytest.raises(InvalidArgument):
        roles.check(["article.read"])  # type: ignore[arg-type]
    get_identity.assert_not_called()


def test_entry_points_need_the_callbacks() -> None:
    roles = _roles(Role("user", [read]))
    with pytest.raises(InvalidArgument, match="get_identity"):
        roles.check("article.read")
    roles = _roles(Role("user", [read]), get_identity=lambda: 1)
    with pytest.raises(InvalidArgument, match="get_role"):
        roles.check("article.read")


class Recorded(Permission):
    """A permission recording what reaches its check and filter."""

    def __init__(self, name: Hashable) -> None:
        super().__init__(name)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def check(self, identity: Any, *args: Any, **kwargs: Any) -> bool:
        self.calls.append(("check", (identity, *args), kwargs))
        return True

    def filter(self, identity: Any, objects: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("filter", (identity, objects, *args), kwargs))
        return objects[:1]


def test_extra_arguments_reach_role_and_permission_unchanged() -> None:
    recorded = Recorded("message.send")
    roles = _roles(
        Role("user", [recorded]),
        get_identity=lambda *a, **k: "ada",
        get_role=lambda identity, *a, **k: "user",
    )
    article, objects = object(), [4, 5, 6]
    assert roles.check("message.send", article, 7, ip="10.0.0.1", when=None) is True
    assert roles.filter("message.send", objects, article, ip="10.0.0.1") == [4]
    assert recorded.calls == [
        ("check", ("ada", article, 7), {"ip": "10.0.0.1", "when": None}),
        ("filter", ("ada", objects, article), {"ip": "10.0.0.1"}),
    ]
    role = roles.roles["user"]
    assert role.check("bob", "message.send", 1, x=2) is True
    assert recorded.calls[-1] == ("check", ("bob", 1), {"x": 2})


class FromOffice(Permission):
    """Held only from a whitelisted address (balrog's README: ``check("message.send", ip=...)``)."""

    def __init__(self, name: Hashable, whitelist: set[str]) -> None:
        super().__init__(name)
        self.whitelist = whitelist

    def check(self, identity: Any, *args: Any, ip: str | None = None, **kwargs: Any) -> bool:
        return ip in self.whitelist

    def filter(self, identity: Any, objects: Any, *args: Any, **kwargs: Any) -> Any:
        return objects if self.check(identity, *args, **kwargs) else []


def test_a_permission_subclass_checks_an_ip_whitelist() -> None:
    send = FromOffice("message.send", {"10.0.0.1", "10.0.0.2"})
    current = SimpleNamespace(user=SimpleNamespace(role="clerk"))
    roles = _roles(
        Role("clerk", [send]),
        Role("boss", ["message.send"]),
        get_identity=lambda *a, **k: current.user,
        get_role=lambda identity, *a, **k: identity.role,
    )
    assert roles.check("message.send", ip="10.0.0.1")
    assert not roles.check("message.send", ip="192.168.1.9")
    assert not roles.check("message.send")
    assert roles.filter("message.send", [1, 2], ip="10.0.0.2") == [1, 2]
    assert roles.filter("message.send", [1, 2], ip="8.8.8.8") == []
    current.user = SimpleNamespace(role="boss")
    assert roles.check("message.send", ip="192.168.1.9")
    assert send.python_only
    assert not Permission("message.send").python_only


class Admin(Role):
    """balrog's README: an admin role that may do everything."""

    def check(self, identity: Any, permission: Hashable, *args: Any, **kwargs: Any) -> bool:
        return True


def test_an_admin_role_subclass_overrides_check() -> None:
    who = {"role": "user"}
    roles = _roles(
        Admin("admin", []),
        Role("user", [read]),
        get_identity=lambda: who,
        get_role=lambda identity: identity["role"],
    )
    assert roles.check("article.read")
    assert not roles.roles["user"].check(who, "x.y")
    who["role"] = "admin"
    assert roles.check("article.read")
    assert roles.roles["admin"].check(who, "anything.at.all")
    assert roles.roles["admin"].python_only
    assert not roles.roles["user"].python_only
    with pytest.raises(PermissionNotFound):  # the permission must still exist
        roles.check("article.post")


@pytest.mark.parametrize("permission", ["unknown", None, -1, ["unhashable"]], ids=repr)
def test_role_check_is_false_for_a_permission_it_lacks(permission: Any) -> None:
    assert Role("user", [read]).check("ada", permission) is False


def test_role_without_the_permission_filters_a_list_to_nothing() -> None:
    role = Role("user", [read])
    assert role.filter("ada", "article.edit", [1, 2]) == []
    assert role.filter("ada", "article.read", [1, 2]) == [1, 2]  # no rule: unchanged
    roles = _roles(role, Role("editor", [edit]), get_identity=lambda: 1, get_role=lambda i: "user")
    assert roles.filter("article.edit", [1, 2]) == []


def test_permission_defaults_check_true_filter_unchanged() -> None:
    objects = object()
    assert read.check("anyone") is True
    assert read.check("anyone", 1, 2, ip="x") is True
    assert read.filter("anyone", objects, 1, ip="x") is objects


def test_a_permission_rule_checked_without_a_target_denies() -> None:
    user = User(id=3, role="author")
    assert edit_own.check(user) is False  # target.author_id is NULL: UNKNOWN denies
    assert edit_own.check(user, Article(id=1, author_id=3)) is True
    assert edit_own.check(user, Article(id=1, author_id=4)) is False
    assert edit_own.check(user, Article(id=1, author_id=None)) is False


# =============================================================================================
# a permission with a declarative rule, applied by filter (SQLite and PostgreSQL)


def test_a_rule_permission_filters_a_select_a_query_and_a_list(db: Session) -> None:
    author = db.get(User, 3)
    assert author is not None
    select = edit_own.filter(author, sa.select(Article).order_by(Article.id))
    assert [a.id for a in db.scalars(select)] == [1]
    query = edit_own.filter(author, db.query(Article).order_by(Article.id))
    assert [a.id for a in query.all()] == [1]
    articles = db.scalars(sa.select(Article).order_by(Article.id)).all()
    assert [a.id for a in edit_own.filter(author, articles)] == [1]
    db.expire_all()  # a rule permission loads what it needs (no SQL fallback outside Authorizer)
    assert [a.id for a in edit_own.filter(author, articles)] == [1]
    assert edit_own.check(author, articles[0])
    assert not edit_own.check(author, articles[1])
    published = read_published.filter(author, sa.select(Article.id).order_by(Article.id))
    assert list(db.scalars(published)) == [1, 4]


def test_a_role_without_the_permission_filters_a_select_and_a_query_to_nothing(
    db: Session,
) -> None:
    role = Role("user", [read])
    ada = db.get(User, 2)
    assert db.scalars(role.filter(ada, "article.edit", sa.select(Article))).all() == []
    assert role.filter(ada, "article.edit", db.query(Article)).all() == []
    assert len(db.scalars(role.filter(ada, "article.read", sa.select(Article))).all()) == 6


def test_balrog_style_entry_points_with_rule_permissions(db: Session) -> None:
    roles = RolePolicy(
        list(ROLES.roles.values()),
        get_identity=lambda *args, request, **kwargs: request.user,
        get_role=lambda user, *args, **kwargs: user.role,
    )
    request = SimpleNamespace(user=db.get(User, 3))
    one, two = db.get(Article, 1), db.get(Article, 2)
    assert roles.check("article.edit", one, request=request)
    assert not roles.check("article.edit", two, request=request)
    assert roles.check("article.comment", request=request)
    mine = roles.filter("article.edit", sa.select(Article.id), request=request)
    assert list(db.scalars(mine)) == [1]
    request.user = db.get(User, 1)  # anonymous: published articles only
    visible = roles.filter("article.read", db.query(Article).order_by(Article.id), request=request)
    assert [a.id for a in visible] == [1, 4]
    assert roles.filter("article.edit", db.query(Article), request=request).all() == []
    request.user = db.get(User, 7)  # a role name no role has
    with pytest.raises(RoleNotFound):
        roles.check("article.read", request=request)


# =============================================================================================
# RolePolicy.register: role grants in the engine


def test_register_declares_every_permission_and_one_rule_each() -> None:
    policy = Policy(["reports.view"], name="app")
    ROLES.register(policy, subject=User, target=Article, role=subject.role)
    assert policy.permissions == ("reports.view", *PERMISSIONS)
    rules = policy.rules()
    assert [r.permission for r in rules] == list(PERMISSIONS)
    assert {r.name for r in rules} == {"roles:articles"}
    assert all(isinstance(r.rule, RoleGrant) and not r.check_only for r in rules)
    assert str(rules[2]) == (
        "'roles:articles': User may 'article.edit' on Article if "
        "articles.grants(subject.role, 'article.edit')"
    )


def test_register_then_check_and_filter_agree(db: Session) -> None:
    allowed = assert_check_and_filter_agree(
        db, registered(), PERMISSIONS, lambda u, a, p: role_allows(u.role, a, u, p)
    )
    assert allowed > 20


def test_role_grants_combine_with_other_rules(db: Session) -> None:
    policy = registered()
    policy.allow("article.edit", subject=User, target=Article, when=target.author == subject)
    policy.allow(
        "article.delete",
        subject=User,
        target=Article,
        when=(target.author_id == subject.id) & ~target.is_published,
        name="unpublished own",
    )

    def oracle(user: User, article: Article, permission: Hashable) -> bool:
        own = article.author_id == user.id
        if permission == "article.edit" and own:
            return True
        if permission == "article.delete" and own and article.is_published is False:
            return True
        return role_allows(user.role, article, user, permission)

    assert_check_and_filter_agree(db, policy, PERMISSIONS, oracle)
    authz = Authorizer(policy, db)
    owner, own_article = db.get(User, 2), db.get(Article, 4)  # a plain "user" who owns article 4
    assert authz.check(owner, "article.edit", own_article)
    no_role, other = db.get(User, 6), db.get(Article, 5)  # NULL role, owns article 5
    assert authz.check(no_role, "article.edit", other)
    assert not authz.check(no_role, "article.read", other)


def test_role_grants_inside_a_rule_expression(db: Session) -> None:
    """``grants`` is a rule node like any other: and/or/not with attribute conditions."""
    policy = Policy(["article.feature"])
    policy.allow(
        "article.feature",
        subject=User,
        target=Article,
        when=(ROLES.grants(subject.role, "article.delete") & target.is_published)
        | (ROLES.grants(subject.role, "article.edit") & ~target.is_published),
    )

    def oracle(user: User, article: Article, permission: Hashable) -> bool:
        if article.is_published is True:
            return role_allows(user.role, article, user, "article.delete")
        if article.is_published is False:
            return role_allows(user.role, article, user, "article.edit")
        return False

    assert_check_and_filter_agree(db, policy, ("article.feature",), oracle)


def test_role_read_from_a_membership_row_per_organisation(db: Session) -> None:
    org_roles = RolePolicy(
        [
            Role("admin", ["doc.edit", "doc.view"]),
            Role("member", ["doc.view"]),
            Role("guest", [Permission("doc.view", when=target.is_published)]),
        ],
        name="org",
    )
    policy = Policy(["doc.edit", "doc.view"])
    for p in ("doc.edit", "doc.view"):
        policy.allow(
            p,
            subject=User,
            target=Article,
            when=subject.memberships.any(
                (it.org_id == target.org_id) & org_roles.grants(it.role, p)
            ),
        )

    def oracle(user: User, article: Article, permission: Hashable) -> bool:
        for m in user.memberships:
            if m.org_id != article.org_id:
                continue
            if m.role == "admin" or (permission == "doc.view" and m.role == "member"):
                return True
            if permission == "doc.view" and m.role == "guest" and article.is_published is True:
                return True
        return False

    assert_check_and_filter_agree(db, policy, ("doc.edit", "doc.view"), oracle)
    authz = Authorizer(policy, db)
    sql = _literal_sql(authz.filter(db.get(User, 1), "doc.view", Article))
    assert re.search(r"memberships_\d+\.role IN \('admin', 'member'\)", sql), sql
    assert re.search(r"memberships_\d+\.role = 'guest'", sql), sql


def test_many_role_names_on_the_subject(db: Session) -> None:
    policy = Policy()
    ROLES.register(policy, subject=User, target=Article, role=subject.role_names, many=True)

    def oracle(user: User, article: Article, permission: Hashable) -> bool:
        return any(role_allows(r, article, user, permission) for r in user.role_names or ())

    assert_check_and_filter_agree(db, policy, PERMISSIONS, oracle)
    assert "many=True" in str(policy.rules()[0].rule)


def test_many_role_names_from_a_column_are_refused() -> None:
    """A column holding a collection of role names has no SQL form (it would allow all)."""
    org_roles = RolePolicy([Role("admin", ["doc.edit"])])
    policy = Policy(["doc.edit"])
    with pytest.raises(RuleNotTranslatable, match="many=True"):
        policy.allow(
            "doc.edit",
            subject=User,
            target=Article,
            when=subject.memberships.any(org_roles.grants(it.role, "doc.edit", many=True)),
        )
    assert policy.rules() == ()


def test_a_negated_role_grant_agrees_for_null_and_unknown_roles(db: Session) -> None:
    """``~grants`` under SQL's three-valued logic: the check says what the filter says."""
    only_authors = RolePolicy([Role("author", [edit_own]), Role("user", [read])], name="authors")
    policy = Policy(["not.editor", "not.reader"])
    policy.allow(
        "not.editor",
        subject=User,
        target=Article,
        when=~only_authors.grants(subject.role, "article.edit"),
    )
    policy.allow(
        "not.reader",
        subject=User,
        target=Article,
        when=~only_authors.grants(subject.role_names, "article.read", many=True),
    )

    def oracle(user: User, article: Article, permission: Hashable) -> bool:
        if permission == "not.editor":
            # NULL role: NULL = 'author' AND rule is FALSE when the rule is FALSE, else UNKNOWN
            if user.role in (None, "author"):
                # author: NOT (author_id = :id), UNKNOWN for a NULL author_id
                # NULL: NOT (NULL = 'author' AND author_id = :id): TRUE only when the rule is FALSE
                return article.author_id is not None and article.author_id != user.id
            return True  # any other role name grants nothing
        names = user.role_names
        if names is None:
            return False  # a NULL collection: UNKNOWN
        if "user" in names:
            return False
        return None not in names  # NULL IN ('user') is UNKNOWN

    assert_check_and_filter_agree(db, policy, ("not.editor", "not.reader"), oracle)


def test_roles_without_a_target(db: Session) -> None:
    staff = RolePolicy([Role("editor", ["reports.view"]), Role("user", [])], name="staff")
    policy = Policy()
    staff.register(policy, subject=User, role=subject.role)
    authz = Authorizer(policy, db)
    assert [u.id for u in db.scalars(sa.select(User)) if authz.check(u, "reports.view")] == [5]
    db.expire_all()
    assert authz.check(db.get(User, 5), "reports.view")
    assert not authz.check(db.get(User, 6), "reports.view")


# -- Python-only overrides -----------------------------------------------------------------------

WHITELIST = {"10.0.0.1"}


def _office_roles() -> RolePolicy:
    return RolePolicy(
        [
            Role("user", [read, FromOffice("article.comment", WHITELIST)]),
            Role("editor", [read, comment, edit]),
        ],
        name="office",
    )


def test_python_only_permission_needs_check_only() -> None:
    policy = Policy(["reports.view"])
    policy.allow("reports.view", subject=User, when=subject.role == "editor")
    before = (policy.permissions, policy.rules())
    with pytest.raises(RuleNotTranslatable, match="check_only=True") as info:
        _office_roles().register(policy, subject=User, target=Article, role=subject.role)
    assert "'article.comment'" in str(info.value)
    assert "'article.read'" not in info.value.reason
    assert (policy.permissions, policy.rules()) == before


def test_check_only_permission_checks_in_python_and_refuses_to_filter(db: Session) -> None:
    policy = Policy()
    _office_roles().register(
        policy, subject=User, target=Article, role=subject.role, check_only=True
    )
    assert {r.permission: r.check_only for r in policy.rules()} == {
        "article.read": False,
        "article.comment": True,
        "article.edit": False,
    }
    authz = Authorizer(policy, db)
    user, editor, nobody = db.get(User, 2), db.get(User, 5), db.get(User, 1)
    article = db.get(Article, 1)
    assert authz.check(user, "article.comment", article, ip="10.0.0.1")
    assert not authz.check(user, "article.comment", article, ip="10.9.9.9")
    assert not authz.check(user, "article.comment", article)
    assert authz.check(editor, "article.comment", article)  # holds it outright
    assert not authz.check(nobody, "article.comment", article, ip="10.0.0.1")
    db.expire_all()  # not loaded: a check-only plan loads lazily instead of querying
    assert authz.check(user, "article.comment", article, ip="10.0.0.1")
    for who in (user, editor):
        with pytest.raises(RuleNotTranslatable, match=r"article\.comment"):
            authz.filter(who, "article.comment", Article)
    # the permissions these roles hold without Python overrides still filter in SQL
    assert len(db.scalars(authz.filter(user, "article.read", Article)).all()) == 6
    assert db.scalars(authz.filter(user, "article.edit", Article)).all() == []
    assert len(db.scalars(authz.filter(editor, "article.edit", Article)).all()) == 6


def test_context_reaches_overrides_unchanged_through_the_authorizer(db: Session) -> None:
    """Everything extra passed to ``Authorizer.check`` reaches ``Role.check`` and
    ``Permission.check`` as it was given: nothing of bastion's own (its session) is added."""
    seen: list[tuple[Any, ...]] = []

    class Strict(Permission):
        def check(self, identity: Any, target: Any = None, *, ip: str | None = None) -> bool:
            seen.append(("permission", identity.id, target, ip))
            return ip == "10.0.0.1"

    class Auditor(Role):
        def check(self, identity: Any, permission: Any, *args: Any, **kwargs: Any) -> bool:
            seen.append(("role", permission, args, kwargs))
            return super().check(identity, permission, *args, **kwargs)

    roles = RolePolicy([Auditor("user", [Strict("article.comment")])], name="strict")
    policy = Policy()
    roles.register(policy, subject=User, target=Article, role=subject.role, check_only=True)
    authz = Authorizer(policy, db)
    user, article = db.get(User, 2), db.get(Article, 1)
    assert authz.check(user, "article.comment", article, ip="10.0.0.1")
    assert not authz.check(user, "article.comment", article, ip="10.9.9.9")
    assert seen == [
        ("role", "article.comment", (article,), {"ip": "10.0.0.1"}),
        ("permission", 2, article, "10.0.0.1"),
        ("role", "article.comment", (article,), {"ip": "10.9.9.9"}),
        ("permission", 2, article, "10.9.9.9"),
    ]


def test_an_admin_role_subclass_makes_every_permission_check_only(db: Session) -> None:
    roles = RolePolicy([Admin("admin", []), Role("user", [read, comment])], name="admin")
    policy = Policy()
    with pytest.raises(RuleNotTranslatable):
        roles.register(policy, subject=User, target=Article, role=subject.role)
    assert policy.rules() == ()
    assert policy.permissions == ()
    roles.register(policy, subject=User, target=Article, role=subject.role, check_only=True)
    assert all(r.check_only for r in policy.rules())
    db.add(User(id=9, role="admin"))
    db.commit()
    authz = Authorizer(policy, db)
    admin, user, article = db.get(User, 9), db.get(User, 2), db.get(Article, 1)
    assert authz.check(admin, "article.comment", article)
    assert authz.check(user, "article.comment", article)
    assert not authz.check(db.get(User, 1), "article.read", article)
    with pytest.raises(RuleNotTranslatable):
        authz.filter(user, "article.read", Article)


def test_registration_is_all_or_nothing() -> None:
    broken = RolePolicy(
        [
            Role("user", [read, comment]),
            Role("author", [Permission("article.edit", when=target.nope == 1)]),
        ],
        name="broken",
    )
    policy = Policy(["reports.view"])
    policy.allow("reports.view", subject=User, when=subject.role == "editor")
    before = (policy.permissions, policy.rules())
    with pytest.raises(UnknownAttribute):
        broken.register(policy, subject=User, target=Article, role=subject.role)
    assert (policy.permissions, policy.rules()) == before
    with pytest.raises(UnknownAttribute):
        ROLES.register(policy, subject=User, target=Article, role=subject.rank)
    assert (policy.permissions, policy.rules()) == before
    with pytest.raises(InvalidArgument):
        ROLES.register(policy, subject=User, target=Article, role="role")
    assert (policy.permissions, policy.rules()) == before
    ROLES.register(policy, subject=User, target=Article, role=subject.role)
    after = (policy.permissions, policy.rules())
    with pytest.raises(DuplicateRule):  # the same roles twice
        ROLES.register(policy, subject=User, target=Article, role=subject.role)
    assert (policy.permissions, policy.rules()) == after


def test_grants_validates_its_arguments() -> None:
    with pytest.raises(PermissionNotFound):
        ROLES.grants(subject.role, "article.post")
    with pytest.raises(InvalidArgument):
        ROLES.grants("author", "article.read")
    grant = ROLES.grants(subject.role, "article.edit")
    assert grant == ROLES.grants(subject.role, "article.edit")
    assert hash(grant) == hash(ROLES.grants(subject.role, "article.edit"))
    assert grant != ROLES.grants(subject.role, "article.read")
    assert grant != ROLES.grants(subject.role, "article.edit", many=True)
    same_roles_other_policy = RolePolicy(list(ROLES.roles.values()), name="articles")
    assert grant != same_roles_other_policy.grants(subject.role, "article.edit")
    assert grant.holders() == {"editor"}
    assert set(grant.conditional()) == {"author"}
    assert grant.python_only_roles() == {}


# =============================================================================================
# the SQL shape


def _literal_sql(stmt: Any) -> str:
    return " ".join(str(stmt.compile(compile_kwargs={"literal_binds": True})).split())


def _persistent(user: User) -> User:
    make_transient_to_detached(user)  # an identity key without a database
    return user


@pytest.mark.parametrize(
    ("role", "permission", "where"),
    [
        ("editor", "article.delete", "FROM articles"),  # held outright: no WHERE at all
        ("author", "article.delete", "WHERE false"),  # not held: nothing
        ("ghost", "article.read", "WHERE false"),  # no such role: nothing
        ("author", "article.edit", "WHERE articles.author_id = 3"),  # only its rule
        ("anonymous", "article.read", "WHERE articles.is_published = true"),
        (None, "article.edit", "WHERE CAST(NULL AS BOOLEAN)"),  # NULL role: UNKNOWN
    ],
)
def test_a_subject_role_folds_while_the_filter_is_built(
    role: str | None, permission: str, where: str
) -> None:
    authz = Authorizer(registered(), Session())
    sql = _literal_sql(authz.filter(User(id=3, role=role), permission, Article))
    assert sql.endswith(where), sql
    assert "role" not in sql  # the subject's role is never a SQL column


def test_a_role_column_of_a_related_row_is_an_in_list() -> None:
    policy = Policy(["article.feature", "doc.view"])
    policy.allow(
        "article.feature",
        subject=User,
        target=Article,
        when=target.author.has(ROLES.grants(it.role, "article.read")),
    )
    authz = Authorizer(policy, Session())
    sql = _literal_sql(authz.filter(User(id=1, role="user"), "article.feature", Article))
    assert re.search(
        r"EXISTS \(SELECT 1 FROM users AS (\w+) WHERE \1\.id = articles\.author_id AND "
        r"\(\1\.role IN \('author', 'editor', 'user'\) OR \1\.role = 'anonymous' AND "
        r"articles\.is_published = true\)\)$",
        sql,
    ), sql


def test_a_membership_role_is_an_in_list_over_the_holders() -> None:
    org_roles = RolePolicy(
        [Role("admin", ["doc.edit"]), Role("owner", ["doc.edit"]), Role("viewer", ["doc.view"])]
    )
    policy = Policy(["doc.edit"])
    policy.allow(
        "doc.edit",
        subject=User,
        target=Article,
        when=subject.memberships.any(
            (it.org_id == target.org_id) & org_roles.grants(it.role, "doc.edit")
        ),
    )
    authz = Authorizer(policy, Session())
    sql = _literal_sql(authz.filter(_persistent(User(id=5)), "doc.edit", Article))
    assert re.search(
        r"WHERE articles\.org_id IN \(SELECT (\w+)\.org_id FROM memberships AS \1 "
        r"WHERE \1\.user_id = 5 AND \1\.role IN \('admin', 'owner'\)\)$",
        sql,
    ), sql


# -- the inlined many=True read (W1's hot path) ------------------------------------------------


class SlotsUser:
    """An unmapped subject with ``__slots__`` (no ``__dict__``), as W1's benchmark users."""

    __slots__ = ("roles",)

    def __init__(self, roles: Any) -> None:
        self.roles = roles


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("user",), True),
        (("nobody",), False),
        (("guest",), False),
        (("guest", "author"), True),
        ((), False),
        (None, None),  # no collection: UNKNOWN
        (("nobody", None), None),  # NULL IN (...): UNKNOWN
        (("author", None), True),
        ([["unhashable"]], False),  # not a role name
        ([["unhashable"], "user"], True),
    ],
)
def test_many_role_names_on_a_plain_subject(roles: Any, expected: bool | None) -> None:
    """The inlined read of ``subject.roles`` answers as the general reader does."""
    plain = RolePolicy(
        [Role("user", ["a.read"]), Role("author", ["a.read", "a.edit"]), Role("guest", ["a.edit"])],
        name="plain",
    )
    node = plain.grants(subject.roles, "a.read", many=True)
    assert to_python(node)(SlotsUser(roles), None, {}, None) is expected
    assert to_python(~node)(SlotsUser(roles), None, {}, None) is (
        None if expected is None else not expected
    )
    policy = Policy()
    plain.register(policy, subject=SlotsUser, role=subject.roles, many=True)
    assert Authorizer(policy, Session()).check(SlotsUser(roles), "a.read") is (expected is True)


# -- explanations of roles decided in Python, or of no role at all ------------------------------


class _ExplainBase(sa.orm.DeclarativeBase):
    pass


class _Staffer(_ExplainBase):
    __tablename__ = "x_staff"
    id: sa.orm.Mapped[int] = sa.orm.mapped_column(primary_key=True)
    role: sa.orm.Mapped[str | None]


class _Memo(_ExplainBase):
    __tablename__ = "x_memos"
    id: sa.orm.Mapped[int] = sa.orm.mapped_column(primary_key=True)


class _Overseer(Role):
    def check(self, identity: Any, permission: Any, *args: Any, **kwargs: Any) -> bool:
        return True


def test_explain_names_a_role_decided_in_python_and_survives_unhashable_names() -> None:
    """``explain`` said "role 'boss' does not hold" when the role's own check allowed; and a
    list passed as ``ctx.role`` raised TypeError in ``explain`` (check and filter deny it)."""
    engine = sa.create_engine("sqlite://")
    _ExplainBase.metadata.create_all(engine)
    roles = RolePolicy([_Overseer("boss"), Role("clerk", ["memo.read"])])
    policy = Policy()
    roles.register(policy, subject=_Staffer, target=_Memo, role=subject.role, check_only=True)
    by_context = Policy()
    roles.register(by_context, subject=_Staffer, target=_Memo, role=ctx.role, check_only=True)
    with sa.orm.Session(engine) as s:
        s.add_all([_Staffer(id=1, role="boss"), _Memo(id=1)])
        s.commit()
        authz, boss, memo = Authorizer(policy, s), s.get(_Staffer, 1), s.get(_Memo, 1)
        assert authz.check(boss, "memo.read", memo)
        explanation = authz.explain(boss, "memo.read", memo)
        assert explanation.allowed
        assert "role 'boss' decides in Python (_Overseer.check)" in str(explanation)
        other = Authorizer(by_context, s)
        assert not other.check(boss, "memo.read", memo, role=["clerk"])
        assert not other.explain(boss, "memo.read", memo, role=["clerk"]).allowed
