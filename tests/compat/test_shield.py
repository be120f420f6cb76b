"""bastion.compat.shield: shield 0.3.2's API and behaviour, by changing one import.

Four parts, on SQLite and PostgreSQL:

1. A port of shield's own test suite (``tests/sqlalchemy.py`` and ``tests/test_shield.py`` of the
   0.3.2 sdist): ``import shield`` → ``from bastion.compat import shield``; the module-level
   engine and ``setup()`` methods became the ``engine``/``session`` fixtures. Every assertion is
   kept as it was.
2. shield's README examples: lucky users, users reading their own books, pages deferring to red
   books.
3. The SQL the facade emits (semijoins and EXISTS, no row multiplication, one query per ``has``)
   and the documented differences from shield.
4. ``Registry.export``: the same rules in bastion's engine give the same answers.

Every test gets a registry of its own: the autouse fixture ``private_registry`` swaps the
module's global ``registry`` (which the module-level functions use) for a fresh one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    declarative_base,
    mapped_column,
    relationship,
)

from bastion import Authorizer, InvalidArgument, Policy, PolicyError, RuleNotTranslatable
from bastion.compat import shield


@pytest.fixture(autouse=True)
def private_registry(monkeypatch: pytest.MonkeyPatch) -> shield.Registry:
    """A fresh registry for every test, used by ``shield.rule``/``filter``/``has``/..."""
    fresh = shield.Registry()
    monkeypatch.setattr(shield, "registry", fresh)
    return fresh


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements sent while the test runs."""
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(engine, "before_cursor_execute", record)


# =============================================================================================
# 1. shield's own test suite
#
# tests/sqlalchemy.py: the models, unchanged except ``overlaps=`` on Membership's relationships
# (SQLAlchemy 2 warns that they write the same columns as User.teams).

Base = declarative_base()


class User(Base):
    __tablename__ = "user"

    id = sa.Column(sa.Integer, autoincrement=True, primary_key=True)

    name = sa.Column(sa.Unicode(250), default="", nullable=False)

    teams = orm.relationship(
        "Team",
        backref=orm.backref("users", lazy="dynamic"),
        lazy="dynamic",
        secondary=lambda: Membership.__table__,
        foreign_keys=lambda: [Membership.team_id, Membership.user_id],
    )


class Team(Base):
    __tablename__ = "team"

    id = sa.Column(sa.Integer, autoincrement=True, primary_key=True)

    name = sa.Column(sa.Unicode(250), default="", nullable=False)

    type = sa.Column(sa.Unicode(256), nullable=False)

    __mapper_args__ = {
        "polymorphic_on": type,
        "polymorphic_identity": "team",
    }


class DerivedTeam(Team):
    __tablename__ = "superuser"

    id = sa.Column(sa.ForeignKey(Team.id), primary_key=True)

    super_status = sa.Column(sa.Boolean, default=True, nullable=False)

    __mapper_args__ = {"polymorphic_identity": "derived_team"}


class Membership(Base):
    __tablename__ = "membership"

    id = sa.Column(sa.Integer, autoincrement=True, primary_key=True)

    user_id = sa.Column(sa.ForeignKey(User.id), nullable=False)

    user = orm.relationship(User, overlaps="teams,users")

    team_id = sa.Column(sa.ForeignKey(Team.id), nullable=False)

    team = orm.relationship(Team, overlaps="teams,users")

    is_active = sa.Column(sa.Boolean, nullable=False)


class Box(Base):
    __tablename__ = "box"

    id = sa.Column(sa.Integer, autoincrement=True, primary_key=True)

    team_id = sa.Column(sa.ForeignKey(Team.id), nullable=False)

    team = orm.relationship(Team)


# tests/test_shield.py


class BaseTest:
    @pytest.fixture(autouse=True)
    def database(self, engine: Engine, session: Session) -> None:
        meta = Base.metadata
        meta.create_all(engine)
        # the fixtures drop the database (PostgreSQL) or its file (SQLite) afterwards
        self.session = session


class RuleTest(BaseTest):
    @pytest.fixture(autouse=True)
    def register_rules(self) -> Iterator[None]:
        yield
        shield.registry.clear()


class FixtureTest(BaseTest):
    @pytest.fixture(autouse=True)
    def setup(self, database: None) -> None:
        # Add 6 users, 2 teams, and link the first 3 to 1 and the
        # second 3 to 2.

        self.users = users = []
        for n in range(6):
            users.append(User(name=str(n)))

        self.session.add_all(users)
        self.session.commit()

        teams = []
        for n in range(2):
            teams.append(Team(name=str(n)))

        self.session.add_all(teams)
        self.session.commit()

        links = []
        for n in range(3):
            links.append(Membership(team=teams[0], user=users[n], is_active=True))

        for n in range(3):
            links.append(Membership(team=teams[1], user=users[n + 3], is_active=False))

        self.session.add_all(links)
        self.session.commit()

        # Create 10 boxes (5 for each team).
        self.boxes = boxes = []
        for n in range(5):  # noqa: B007 - as in shield's suite
            boxes.append(Box(team=teams[0]))

        for n in range(5):  # noqa: B007
            boxes.append(Box(team=teams[1]))

        self.session.add_all(boxes)
        self.session.commit()


class TestRegistry(RuleTest, FixtureTest):
    def rule(self, **kwargs: object) -> str:
        return "invoked"

    def register_specific_rule(self) -> None:
        rule = shield.rule("member", bearer=User, target=Team)
        rule(self.rule)

    def register_target_rule(self) -> None:
        shield.rule(bearer=User, target=Team)(self.rule)

    def register_bearer_rule(self) -> None:
        shield.rule("member", bearer=User)(self.rule)

    def test_register_normal_rule(self) -> None:
        self.register_specific_rule()

        assert len(shield.registry) == 1

    def test_register_target_rule(self) -> None:
        self.register_target_rule()

        assert len(shield.registry) == 0
        assert len(shield.registry.target) == 1

    def test_register_bearer_rule(self) -> None:
        self.register_bearer_rule()

        assert len(shield.registry) == 0
        assert len(shield.registry.bearer) == 1

    def test_retrieve_existing_rules(self) -> None:
        self.register_specific_rule()
        self.register_target_rule()
        self.register_bearer_rule()

        rules = []

        # BEARER has PERMISSION on TARGET
        rules.append(shield.registry.retrieve(permission="member", bearer=User, target=Team))

        # BEARER has all permissions on TARGET
        rules.append(shield.registry.retrieve(bearer=User, target=Team))

        # BEARER has PERMISSION
        rules.append(shield.registry.retrieve(permission="member", bearer=User))

        for rule in rules:
            assert rule is not None
            assert rule() == "invoked"

    def test_retrieve_nonexistant_rule(self) -> None:
        self.register_specific_rule()

        # Generate argument calls for the registry retrieval
        args = [
            # BEARER has PERMISSION on TARGET
            {
                "permission": "awesome",  # invalid.
                "bearer": User,
                "target": Team,
            },
            # BEARER has all permissions on TARGET
            {
                "bearer": Box,  # invalid.
                "target": Team,
            },
            # BEARER has PERMISSION
            {
                "permission": "awesome",  # invalid.
                "bearer": User,
            },
        ]

        for argset in args:
            with pytest.raises(KeyError):
                shield.registry.retrieve(**argset)

    def test_inherited_caching(self) -> None:
        self.register_target_rule()

        assert len(shield.registry.target) == 1

        shield.registry.retrieve(bearer=User, target=DerivedTeam)

        assert len(shield.registry.target) == 2

    def test_no_caching(self) -> None:
        shield.rule(target=Team, bearer=User, cache=False)(self.rule)

        assert len(shield.registry.target) == 1

        shield.registry.retrieve(target=Team, bearer=User)

        assert len(shield.registry.target) == 1


class TestInterface(RuleTest, FixtureTest):
    """Test common interfaces (shield.filter and shield.has)"""

    def register_membership(self) -> None:
        @shield.rule("member", bearer=User, target=Team)
        def user_is_member_of_team(query, bearer, **kwargs):
            # return teams that this user is part of.  query is scoped to team
            return query.join(Membership).filter(Membership.user == bearer)

    def register_deferred(self) -> None:
        pass

    def test_filter(self) -> None:
        self.register_membership()

        user = self.users[0]

        team_ids = {x.id for x in user.teams}

        query = shield.filter("member", bearer=user, target=Team)

        assert {x.id for x in query} == team_ids

    def test_has(self) -> None:
        self.register_membership()

        user = self.users[0]

        result = shield.has("member", bearer=user, target=user.teams.first())

        assert result is True

    def test_deferred(self) -> None:
        self.register_membership()

        shield.deferred_rule("member", attributes=("team",), bearer=User, target=Box)

        result = shield.filter("member", bearer=self.users[0], target=Box)

        assert result.count() == 5

    def test_deferred_target_style(self) -> None:
        self.register_membership()

        shield.deferred_rule(attributes=("team",), bearer=User, target=Box)

        result = shield.filter("member", bearer=self.users[0], target=Box)

        assert result.count() == 5


# =============================================================================================
# 2. shield's README
#
# README's ``User`` is ``Reader`` here (``user`` is part 1's table); a transient bearer is given
# ``session=``, and a new book is added to the session (has() asks the database, see part 3).


class ReadmeBase(DeclarativeBase):
    pass


class Reader(ReadmeBase):
    __tablename__ = "readers"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class Book(ReadmeBase):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("readers.id"))
    color: Mapped[str | None]
    owner: Mapped[Reader | None] = relationship()
    pages: Mapped[list[Page]] = relationship(back_populates="book")


class Page(ReadmeBase):
    __tablename__ = "pages"
    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(sa.ForeignKey("books.id"))
    pagenum: Mapped[int]
    book: Mapped[Book] = relationship(back_populates="pages")


@pytest.fixture
def library(engine: Engine, session: Session) -> Session:
    ReadmeBase.metadata.create_all(engine)
    session.add_all([Reader(id=n) for n in (7, 10, 32, 54)])
    session.add_all(
        [
            Book(id=1, owner_id=10, color="blue"),
            Book(id=2, owner_id=10, color="red"),
            Book(id=3, owner_id=10, color=None),
            Book(id=4, owner_id=32, color="red"),
            Book(id=5, owner_id=None, color="green"),
        ]
    )
    session.add_all(
        [
            Page(id=10 * b + n, book_id=b, pagenum=n)
            for b, count in ((1, 2), (2, 3), (4, 1))
            for n in range(1, count + 1)
        ]
    )
    session.commit()
    return session


def test_readme_lucky_users(library: Session) -> None:
    @shield.rule("luck", bearer=Reader)
    def user_has_luck(query, bearer, **kwargs):
        # Only users whose id is 7 are lucky.
        return query.filter(bearer.id == 7)

    # Check to see if a specific user is lucky.
    u = Reader(id=54)
    assert shield.has("luck", bearer=u, session=library) is False

    u.id = 7
    assert shield.has("luck", bearer=u, session=library) is True

    # "Retrieve all users who are lucky": the rule reads the *instance* (``bearer.id == 7`` is a
    # Python bool), so for a lucky bearer every reader passes, and for another one none does.
    assert len(shield.filter("luck", bearer=u, session=library).all()) == 4
    assert shield.filter("luck", bearer=Reader(id=54), session=library).all() == []


def test_readme_lucky_users_written_on_the_class(library: Session) -> None:
    # The same rule written on the class selects the lucky users themselves.
    @shield.rule("luck", bearer=Reader)
    def user_has_luck(query, bearer, **kwargs):
        return query.filter(Reader.id == 7)

    assert shield.has("luck", bearer=library.get(Reader, 54)) is False
    assert shield.has("luck", bearer=library.get(Reader, 7)) is True
    query = shield.filter("luck", bearer=library.get(Reader, 54))
    assert [r.id for r in query.all()] == [7]


def test_readme_users_reading_their_own_books(library: Session) -> None:
    @shield.rule("read", bearer=Reader, target=Book)
    def can_user_read_book(query, target, bearer, **kwargs):
        # A user may read a book if it is its owner
        return query.filter(target.owner_id == bearer.id)

    # Check if a specific user can read a specific book.
    u = Reader(id=32)
    b = Book(id=6, owner_id=32)
    library.add(b)  # pending: has() flushes it, as shield's query autoflushed it
    assert shield.has("read", bearer=u, target=b, session=library) is True
    assert shield.has("read", bearer=Reader(id=10), target=b, session=library) is False

    # Retrieve all books that a specific user can read.
    u = Reader(id=10)
    query = shield.filter("read", bearer=u, target=Book, session=library)
    assert sorted(b.id for b in query.all()) == [1, 2, 3]


def test_readme_pages_defer_to_red_books(library: Session) -> None:
    # Create a rule for books that can be read.
    @shield.rule("read", bearer=Reader, target=Book)
    def can_user_read_book(query, target, bearer, **kwargs):
        # Users can only read the book if the book's color is red
        return query.filter(target.color == "red")

    # The rules for a book also apply to the book's pages.
    shield.deferred_rule(attributes=("book",), bearer=Reader, target=Page)

    u = library.get(Reader, 10)
    query = shield.filter("read", bearer=u, target=Book)
    assert sorted(b.id for b in query.all()) == [2, 4]

    # Now fetch the pages that the user can read.
    query = shield.filter("read", bearer=u, target=Page)
    assert sorted((p.book_id, p.pagenum) for p in query.all()) == [(2, 1), (2, 2), (2, 3), (4, 1)]
    assert shield.has("read", bearer=u, target=library.get(Page, 21)) is True
    assert shield.has("read", bearer=u, target=library.get(Page, 11)) is False


# =============================================================================================
# 3. the SQL the facade emits, and the differences from shield


@pytest.fixture
def teams(engine: Engine, session: Session) -> Session:
    """Part 1's schema: users 1-3 in team 1 (user 1 twice), users 4-6 in team 2; boxes 1-5 in
    team 1, 6-10 in team 2; derived team 3 (user 4)."""
    Base.metadata.create_all(engine)
    session.add_all([User(id=n, name=str(n)) for n in range(1, 7)])
    session.add_all([Team(id=1, name="a"), Team(id=2, name="b")])
    session.add(DerivedTeam(id=3, name="c"))
    session.flush()
    links = [(1, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (4, 3)]
    session.add_all([Membership(user_id=u, team_id=t, is_active=u != 6) for u, t in links])
    session.add_all([Box(id=n, team_id=1 if n <= 5 else 2) for n in range(1, 11)])
    session.commit()
    return session


def member_rule(query, bearer, **kwargs):
    return query.join(Membership).filter(Membership.user == bearer)


def sql(query: object) -> str:
    return str(query.statement)


def test_filter_is_a_semijoin_and_never_multiplies_rows(teams: Session) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    query = shield.filter("member", bearer=teams.get(User, 1), target=Team)
    assert sql(query) == (
        "SELECT team.id, team.name, team.type \n"
        "FROM team \n"
        "WHERE team.id IN (SELECT team.id \n"
        "FROM team JOIN membership ON team.id = membership.team_id \n"
        "WHERE :param_1 = membership.user_id)"
    )
    # user 1 belongs to team 1 through two membership rows: one team, counted once
    assert [t.id for t in query] == [1]
    assert query.count() == 1


def test_deferral_is_an_exists_through_an_alias(teams: Session) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    shield.deferred_rule(attributes=("team",), bearer=User, target=Box)
    query = shield.filter("member", bearer=teams.get(User, 1), target=Box)
    assert sql(query) == (
        "SELECT box.id, box.team_id \n"
        "FROM box \n"
        "WHERE EXISTS (SELECT 1 \n"
        "FROM team AS team_1 \n"
        "WHERE team_1.id = box.team_id AND team_1.id IN (SELECT team_2.id \n"
        "FROM team AS team_2 JOIN membership ON team_2.id = membership.team_id \n"
        "WHERE :param_1 = membership.user_id))"
    )
    assert query.count() == 5
    assert sorted(b.id for b in query) == [1, 2, 3, 4, 5]


def test_has_is_one_exists_query_for_the_primary_key(teams: Session, statements: list[str]) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    shield.deferred_rule(attributes=("team",), bearer=User, target=Box)
    user, box1, box6 = teams.get(User, 1), teams.get(Box, 1), teams.get(Box, 6)
    statements.clear()
    assert shield.has("member", bearer=user, target=box1) is True
    assert shield.has("member", bearer=user, target=box6) is False
    assert len(statements) == 2
    for statement in statements:
        assert statement.startswith("SELECT EXISTS (SELECT 1")
        assert "box.id = " in statement


def test_several_permissions_must_all_hold(teams: Session, statements: list[str]) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)

    @shield.rule("active", bearer=User, target=Team)
    def active_member(query, bearer, target, **kwargs):
        # joins the same table as "member": each rule has its own subquery, so no clash
        return query.join(Membership).filter(
            Membership.user == bearer, Membership.is_active.is_(True)
        )

    user6 = teams.get(User, 6)  # an inactive member of team 2
    assert [t.id for t in shield.filter("member", bearer=user6, target=Team)] == [2]
    assert shield.filter("member", "active", bearer=user6, target=Team).all() == []
    assert [
        t.id for t in shield.filter("member", "active", bearer=teams.get(User, 5), target=Team)
    ] == [2]
    team2, user5 = teams.get(Team, 2), teams.get(User, 5)
    statements.clear()
    assert shield.has("member", "active", bearer=user6, target=team2) is False
    assert shield.has("member", "active", bearer=user5, target=team2) is True
    assert len(statements) == 2  # one query per has(), whatever the number of permissions


def test_a_missing_rule_denies_without_an_error(teams: Session, statements: list[str]) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    user, team = teams.get(User, 1), teams.get(Team, 1)
    assert shield.filter("own", bearer=user, target=Team).all() == []
    assert shield.filter("member", "own", bearer=user, target=Team).count() == 0
    statements.clear()
    assert shield.has("own", bearer=user, target=team) is False
    assert statements == []  # decided without asking the database
    # a deferral to a class without a rule denies too (shield raised KeyError)
    shield.deferred_rule("own", attributes=("team",), bearer=User, target=Box)
    assert shield.filter("own", bearer=user, target=Box).all() == []
    assert shield.has("own", bearer=user, target=teams.get(Box, 1)) is False


def test_the_session_comes_from_the_query_the_argument_or_the_bearer(teams: Session) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    stranger = User(id=1)  # transient: no session of its own, but the primary key of user 1
    with pytest.raises(InvalidArgument, match="no session"):
        shield.filter("member", bearer=stranger, target=Team)
    assert [t.id for t in shield.filter("member", bearer=stranger, target=Team, session=teams)] == [
        1
    ]
    # the caller's query is narrowed (and its session used)
    mine = teams.query(Team).filter(Team.name != "a")
    assert shield.filter("member", bearer=stranger, target=Team, query=mine).all() == []
    assert shield.has("member", bearer=stranger, target=teams.get(Team, 1), query=mine) is False
    assert shield.has("member", bearer=stranger, target=teams.get(Team, 1), session=teams) is True
    # query=None is no query (shield used None as the query)
    assert shield.filter("member", bearer=teams.get(User, 1), target=Team, query=None).count() == 1


def test_has_needs_a_stored_target(teams: Session) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    with pytest.raises(InvalidArgument, match="no primary key"):
        shield.has("member", bearer=teams.get(User, 1), target=Team(name="new"))
    with pytest.raises(InvalidArgument, match="instance"):
        shield.has("member", bearer=teams.get(User, 1), target=Team)


def test_bearer_only_rules_work(teams: Session) -> None:
    @shield.rule("admin", bearer=User)
    def first_users(query, bearer, target, **kwargs):
        assert target is None  # as in shield: the rule was registered without a target
        return query.filter(User.id <= 2)

    assert shield.has("admin", bearer=teams.get(User, 2)) is True
    assert shield.has("admin", bearer=teams.get(User, 3)) is False
    assert sorted(u.id for u in shield.filter("admin", bearer=teams.get(User, 3))) == [1, 2]
    assert shield.has("other", bearer=teams.get(User, 1)) is False


def test_target_rules_inherit_from_the_nearest_base_class(teams: Session) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    assert [
        t.id for t in shield.filter("member", bearer=teams.get(User, 4), target=DerivedTeam)
    ] == [3]
    assert shield.has("member", bearer=teams.get(User, 4), target=teams.get(Team, 3)) is True
    assert shield.has("member", bearer=teams.get(User, 1), target=teams.get(Team, 3)) is False

    @shield.rule("member", bearer=User, target=DerivedTeam)
    def nobody(query, **kwargs):
        return query.filter(sa.false())

    # the nearest class wins, and registering forgot the cached (User, DerivedTeam) lookup
    assert (
        shield.registry.retrieve(bearer=User, target=DerivedTeam, permission="member").function
        is nobody
    )
    assert shield.has("member", bearer=teams.get(User, 4), target=teams.get(Team, 3)) is False
    # Team rows are still decided by Team's rule
    assert shield.has("member", bearer=teams.get(User, 1), target=teams.get(Team, 1)) is True


def test_lookup_order_and_caching() -> None:
    # the registry works on any classes: plain ones here
    class Account: ...

    class Admin(Account): ...

    class Doc: ...

    class Invoice(Doc): ...

    class Special(Invoice): ...

    def any_permission(**kwargs: object) -> str:
        return "all"

    def reader(**kwargs: object) -> str:
        return "read"

    shield.rule(bearer=Account, target=Invoice)(any_permission)
    shield.rule("read", bearer=Account, target=Doc)(reader)
    reg = shield.registry
    # a base class's rule for the permission comes before the class's all-permission rule
    assert reg.retrieve(bearer=Account, target=Invoice, permission="read")() == "read"
    assert reg.retrieve(bearer=Account, target=Invoice, permission="own")() == "all"
    assert reg.retrieve(bearer=Account, target=Special, permission="own")() == "all"
    assert reg.retrieve(bearer=Account, target=Special)() == "all"
    # one registered rule and three cached lookups; the all-permission dict cached Special too
    assert len(reg) == 4
    assert len(reg.target) == 2
    # the bearer class is matched exactly, as in shield
    with pytest.raises(KeyError):
        reg.retrieve(bearer=Admin, target=Doc, permission="read")
    # registering forgets the cached lookups; cache=False rules are looked up every time
    shield.rule("own", bearer=Account, target=Doc, cache=False)(reader)
    assert (len(reg), len(reg.target)) == (2, 1)
    assert reg.retrieve(bearer=Account, target=Special, permission="own")() == "read"
    assert (Account, Special, "own") not in reg
    reg.clear()
    assert (len(reg), len(reg.target), len(reg.bearer)) == (0, 0, 0)


def test_registration_errors_are_shields() -> None:
    with pytest.raises(TypeError, match="bearer must be provided"):
        shield.register(shield.Rule(permission="x", target=Team, function=member_rule))
    with pytest.raises(TypeError, match="either a permission or a target"):
        shield.register(shield.Rule(bearer=User, function=member_rule))
    with pytest.raises(TypeError):
        shield.rule("member", target=Team)
    orm.configure_mappers()  # a missing attribute of a configured class: refused at once
    with pytest.raises(PolicyError, match="not a relationship"):
        shield.deferred_rule(attributes=("name",), bearer=User, target=Box)


def test_many_to_many_deferral_is_any_related_object(teams: Session) -> None:
    # a user may see another user when they may 'member' any of that user's teams
    shield.rule("member", bearer=User, target=Team)(member_rule)
    shield.deferred_rule("member", attributes=("teams",), bearer=User, target=User)
    query = shield.filter("member", bearer=teams.get(User, 4), target=User)
    assert sorted(u.id for u in query) == [4, 5, 6]
    assert query.count() == 3  # user 4's two teams do not duplicate anyone
    assert "JOIN" not in sql(query).split("WHERE")[0]
    assert shield.has("member", bearer=teams.get(User, 1), target=teams.get(User, 3)) is True
    assert shield.has("member", bearer=teams.get(User, 1), target=teams.get(User, 4)) is False


def test_a_deferral_cycle_raises(teams: Session) -> None:
    shield.deferred_rule("member", attributes=("teams",), bearer=User, target=User)
    shield.deferred_rule("member", attributes=("users",), bearer=User, target=Team)
    with pytest.raises(PolicyError, match="deferral cycle"):
        shield.filter("member", bearer=teams.get(User, 1), target=User)


def test_calling_a_deferred_rule_narrows_a_query(teams: Session) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    shield.deferred_rule("member", attributes=("team",), bearer=User, target=Box)
    deferred = shield.registry.retrieve(bearer=User, target=Box, permission="member")
    query = deferred(query=teams.query(Box), permission="member", bearer=teams.get(User, 4))
    assert sorted(b.id for b in query) == [6, 7, 8, 9, 10]
    [(cls, attribute)] = deferred.lookup("member").values()
    assert (cls, attribute.key) == (Team, "team")


# An adjacency list: shelves, volumes and leaves are rows of one table, each level's
# relationship leads to the row above (single-table inheritance). Every level must be an alias.


class TreeBase(DeclarativeBase):
    pass


class Visitor(TreeBase):
    __tablename__ = "visitors"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class Node(TreeBase):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str]
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("nodes.id"))
    color: Mapped[str | None]
    owner_id: Mapped[int | None]
    parent: Mapped[Node | None] = relationship(remote_side=[id])
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "node"}


class Shelf(Node):
    __mapper_args__ = {"polymorphic_identity": "shelf"}


class Volume(Node):
    __mapper_args__ = {"polymorphic_identity": "volume"}
    shelf: Mapped[Shelf | None] = relationship(Shelf, remote_side=lambda: [Node.id], viewonly=True)


class Leaf(Node):
    __mapper_args__ = {"polymorphic_identity": "leaf"}
    volume: Mapped[Volume | None] = relationship(
        Volume, remote_side=lambda: [Node.id], viewonly=True
    )


@pytest.fixture
def tree(engine: Engine, session: Session) -> Session:
    TreeBase.metadata.create_all(engine)
    session.add(Visitor(id=1))
    session.add_all(
        [
            Shelf(id=1, color="red", owner_id=None),
            Shelf(id=2, color="blue", owner_id=1),
            Volume(id=3, parent_id=1, color="blue"),
            Volume(id=4, parent_id=2, color="red"),
            Leaf(id=5, parent_id=3, color="blue"),
            Leaf(id=6, parent_id=4, color="red"),
            Leaf(id=7, parent_id=3, color="red"),
            Node(id=8, parent_id=2, color="red", owner_id=1),
        ]
    )
    session.commit()
    return session


def test_deferral_chain_through_an_adjacency_list(tree: Session) -> None:
    @shield.rule("read", bearer=Visitor, target=Shelf)
    def red_shelves(query, target, **kwargs):
        return query.filter(target.color == "red")  # target: the shelf's alias

    shield.deferred_rule(attributes=("shelf",), bearer=Visitor, target=Volume)
    shield.deferred_rule(attributes=("volume",), bearer=Visitor, target=Leaf)
    visitor = tree.get(Visitor, 1)
    # leaf -> volume -> shelf, three rows of one table: only leaves under shelf 1 (red)
    assert sorted(n.id for n in shield.filter("read", bearer=visitor, target=Leaf)) == [5, 7]
    assert sorted(n.id for n in shield.filter("read", bearer=visitor, target=Volume)) == [3]
    assert [shield.has("read", bearer=visitor, target=tree.get(Node, n)) for n in (5, 6, 7)] == [
        True,
        False,
        True,
    ]
    statement = sql(shield.filter("read", bearer=visitor, target=Leaf))
    assert "FROM nodes AS nodes_1" in statement
    assert "FROM nodes AS nodes_2" in statement
    assert not re.search(r"FROM [^\n]*, nodes\b", statement)  # no stray cartesian FROM


def test_deferral_to_the_parent_row(tree: Session) -> None:
    # A rule on the base class; a subclass defers to its parent, a row of the same table.
    @shield.rule("edit", bearer=Visitor, target=Node)
    def owners(query, target, bearer, **kwargs):
        return query.filter(target.owner_id == bearer.id)

    shield.deferred_rule("edit", attributes=("parent",), bearer=Visitor, target=Volume)
    visitor = tree.get(Visitor, 1)
    # volume 4's parent is shelf 2 (owned by visitor 1); node 8 is edited through its own rule
    assert sorted(n.id for n in shield.filter("edit", bearer=visitor, target=Volume)) == [4]
    assert sorted(n.id for n in shield.filter("edit", bearer=visitor, target=Node)) == [2, 8]
    assert shield.has("edit", bearer=visitor, target=tree.get(Volume, 3)) is False
    assert shield.has("edit", bearer=visitor, target=tree.get(Volume, 4)) is True


# =============================================================================================
# 4. the same rules in bastion's engine


def test_export_gives_the_same_answers(teams: Session) -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    shield.deferred_rule(attributes=("team",), bearer=User, target=Box)
    policy = shield.registry.export()
    authz = Authorizer(policy, teams)
    for user in teams.scalars(sa.select(User)).all():
        for cls in (Team, Box):
            facade = sorted(o.id for o in shield.filter("member", bearer=user, target=cls))
            native = sorted(teams.scalars(authz.filter(user, "member", sa.select(cls.id))))
            assert facade == native, (user.id, cls.__name__)
            for obj in teams.scalars(sa.select(cls)).all():
                assert authz.check(user, "member", obj) == shield.has(
                    "member", bearer=user, target=obj
                )


def test_export_refuses_bearer_only_rules() -> None:
    shield.rule("member", bearer=User, target=Team)(member_rule)
    shield.rule("admin", bearer=User)(member_rule)
    policy = Policy(["other"])
    with pytest.raises(RuleNotTranslatable, match="bearer-only"):
        shield.registry.export(policy)
    assert policy.permissions == ("other",)  # all or nothing
    assert policy.rules() == ()


# -- shield's modules and corners its users relied on ------------------------------------------


def test_shields_modules_and_names_import_as_they_did() -> None:
    from bastion.compat.shield import _registry, _version, decorators, utils

    assert decorators.rule is shield.rule
    assert decorators.deferred_rule is shield.deferred_rule
    assert (decorators.Rule, decorators.DeferredRule) == (shield.Rule, shield.DeferredRule)
    assert decorators.RuleBase is shield.RuleBase
    assert utils.has is shield.has
    assert utils.filter_ is shield.filter
    assert utils.type_for(User) is User
    assert utils.type_for(User(id=1)) is User
    assert _registry.Registry is shield.Registry
    assert issubclass(_registry.CachedDict, _registry.InheritableDict)
    assert _version.__version__ == "0.3.2"
    assert _version.__version_info__ == (0, 3, 2)
    inheritable = _registry.InheritableDict(0)
    inheritable[(Team, "x")] = "team rule"
    assert inheritable[(DerivedTeam, "x")] == "team rule"  # the nearest base class
    assert (DerivedTeam, "x") not in inheritable  # resolved, not kept
    with pytest.raises(KeyError):
        inheritable[(User, "x")]


def test_a_bearer_given_as_a_class_is_looked_up_as_that_class(teams: Session) -> None:
    """shield's ``type_for``: the facade looked the class up as its metaclass and denied all."""
    seen = []

    @shield.rule("see", bearer=User, target=Team)
    def first_team(query, bearer, target, **kwargs):
        seen.append(bearer)
        return query.filter(target.id == 1)

    assert [t.id for t in shield.filter("see", bearer=User, target=Team, session=teams)] == [1]
    assert shield.has("see", bearer=User, target=teams.get(Team, 1), session=teams) is True
    assert seen == [User, User]


def test_a_deferral_may_name_a_class_defined_later(engine: Engine, session: Session) -> None:
    """Registering resolved the related class, configuring every mapper: a relationship to a
    class not defined yet failed, and SQLAlchemy then refused every later use of the mappers."""

    class Later(DeclarativeBase):
        pass

    class Owner(Later):
        __tablename__ = "later_owner"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)

    class Crate(Later):
        __tablename__ = "later_crate"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        shelf_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("later_shelf.id"))
        shelf: orm.Mapped[Shelf] = orm.relationship("Shelf")

    shield.deferred_rule("read", attributes=("shelf",), bearer=Owner, target=Crate)
    # not an attribute yet (it could be a backref, made when the mappers are configured)
    shield.deferred_rule("write", attributes=("nowhere",), bearer=Owner, target=Crate)
    with pytest.raises(PolicyError, match="not a relationship"):  # a column: refused at once
        shield.deferred_rule("read", attributes=("shelf_id",), bearer=Owner, target=Crate)

    class Shelf(Later):
        __tablename__ = "later_shelf"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        owner_id: orm.Mapped[int] = orm.mapped_column()

    @shield.rule("read", bearer=Owner, target=Shelf)
    def own(query, bearer, target, **kwargs):
        return query.filter(target.owner_id == bearer.id)

    Later.metadata.create_all(engine)
    owner = Owner(id=1)
    session.add_all([owner, Shelf(id=1, owner_id=1), Shelf(id=2, owner_id=2)])
    session.add_all([Crate(id=1, shelf_id=1), Crate(id=2, shelf_id=2)])
    session.flush()
    assert [c.id for c in shield.filter("read", bearer=owner, target=Crate)] == [1]
    with pytest.raises(PolicyError, match="not a relationship"):  # checked when used
        shield.filter("write", bearer=owner, target=Crate).all()
    with pytest.raises(PolicyError, match="not a relationship"):  # configured now: at once
        shield.deferred_rule("edit", attributes=("nowhere",), bearer=Owner, target=Crate)


def test_has_flushes_a_pending_target_through_a_scoped_session(teams: Session) -> None:
    """``session=<scoped_session>`` (Flask-SQLAlchemy's ``db.session``): the proxy was never the
    object's session, so the pending target was not flushed and ``has`` raised."""
    shield.rule("named", bearer=User, target=Team)(
        lambda query, **kw: query.filter(Team.name == "z")
    )
    scoped = orm.scoped_session(orm.sessionmaker(teams.get_bind()))
    try:
        bearer = scoped.get(User, 1)
        pending = Team(id=9, name="z")
        scoped.add(pending)
        assert shield.has("named", bearer=bearer, target=pending, session=scoped) is True
    finally:
        scoped.rollback()
        scoped.remove()
