"""Rules whose Python and SQL forms would compare values differently are refused, at registration
(literals, two columns, collations, ``in_`` over one value) or per call (``ctx`` values); and a
new object with only its foreign key set is decided by that key, as after its flush.

Found by a review hunting for ``check(obj) != (obj in filter(...))``: each case below answered
differently depending on whether the object was loaded (Python) or not (SQL), or raised a raw
``TypeError`` from ``check``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from bastion import (
    Authorizer,
    InvalidArgument,
    Policy,
    Role,
    RolePolicy,
    RuleNotTranslatable,
    ctx,
    it,
    subject,
    target,
)


class Base(DeclarativeBase):
    pass


class Person(Base):
    __tablename__ = "t_people"
    id: Mapped[int] = mapped_column(primary_key=True)
    team: Mapped[str | None] = mapped_column(sa.String(10))
    level: Mapped[int | None]


class Item(Base):
    __tablename__ = "t_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[int | None]
    code: Mapped[str | None] = mapped_column(sa.String(10))
    score: Mapped[float | None]
    amount: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(10, 2))
    day: Mapped[dt.date | None]
    at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime())
    team: Mapped[str | None] = mapped_column(sa.String(10))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("t_people.id"))
    owner: Mapped[Person | None] = relationship()


class LabelBase(DeclarativeBase):
    """Never created (SQLite's NOCASE collation does not exist on PostgreSQL)."""


class Label(LabelBase):
    __tablename__ = "t_labels"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str | None] = mapped_column(sa.String(10, collation="NOCASE"))


AWARE = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        (target.level == target.code, "level holds int values and code str values"),
        (target.score == target.amount, "score holds float values and amount Decimal values"),
        (target.day == dt.datetime(2024, 1, 1), "is a datetime, but day holds date values"),
        (target.at == AWARE, "is timezone-aware, but at holds naive datetimes"),
        (("label", target.label == "abc"), "collation 'NOCASE'"),
        (("label", target.label.in_(["a", "b"])), "collation 'NOCASE'"),
        (target.team.in_(subject.team), "reads one column value, not a collection"),
        (target.level.in_(subject.level), "reads one column value, not a collection"),
    ],
    ids=[
        "int-str",
        "float-decimal",
        "date-datetime",
        "naive-aware",
        "nocase",
        "nocase-in",
        "in-str",
        "in-int",
    ],
)
def test_rules_compared_differently_in_python_and_sql_are_refused(rule: object, says: str) -> None:
    policy = Policy(["p"])
    on: type = Item
    if isinstance(rule, tuple):
        on, rule = Label, rule[1]
    with pytest.raises(RuleNotTranslatable, match=says):
        policy.allow("p", subject=Person, target=on, when=rule)
    assert policy.rules() == ()


def test_comparisons_python_and_sql_agree_on_are_accepted() -> None:
    policy = Policy(["p"])
    for rule in (
        target.level == target.score,  # int and float
        target.level == target.amount,  # int and Decimal
        target.day == dt.date(2024, 1, 1),
        target.at == dt.datetime(2024, 1, 1),
        target.team.in_(["a", "b"]),
        target.team == subject.team,
    ):
        policy.allow("p", subject=Person, target=Item, when=rule, replace=True, name="r")


@pytest.fixture
def db(engine: sa.Engine) -> Iterator[Session]:
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Person(id=1, team="ab", level=1))
        session.add(
            Item(id=1, level=1, code="1", day=dt.date(2024, 1, 1), at=dt.datetime(2024, 1, 1))
        )
        session.commit()
        yield session


@pytest.mark.parametrize(
    ("rule", "value", "says"),
    [
        (target.level == ctx.v, "1", "'1' is a str, but level holds int values"),
        (target.level <= ctx.v, "1", "'1' is a str, but level holds int values"),
        (target.code == ctx.v, 1, "1 is a int, but code holds str values"),
        (target.day == ctx.v, dt.datetime(2024, 1, 1), "is a datetime, but day holds date values"),
        (target.at < ctx.v, AWARE, "is timezone-aware, but at holds naive datetimes"),
        (target.team.in_(ctx.v), "ab", "a collection, got 'ab'"),
        (target.level.in_(ctx.v), [1, "2"], "'2' is a str, but level holds int values"),
    ],
)
def test_ctx_values_of_another_type_are_refused_on_every_call(
    db: Session, rule: object, value: object, says: str
) -> None:
    """They disagreed (``1 == '1'``: False in Python, true in SQLite) or raised TypeError."""
    policy = Policy(["p"])
    policy.allow("p", subject=Person, target=Item, when=rule)
    authz = Authorizer(policy, db)
    person, item = db.get(Person, 1), db.get(Item, 1)
    calls = [
        lambda: authz.check(person, "p", item, v=value),
        lambda: authz.filter(person, "p", Item, v=value),
        lambda: authz.check_many(person, "p", [item], v=value),
        lambda: authz.explain(person, "p", item, v=value),
        lambda: authz.who_can("p", item, v=value),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument, match=says):
            call()
    good = {target.day == ctx.v: dt.date(2024, 1, 1), target.at < ctx.v: dt.datetime(2025, 1, 1)}
    for ok_rule, ok_value in good.items():
        fine = Policy(["p"])
        fine.allow("p", subject=Person, target=Item, when=ok_rule)
        assert Authorizer(fine, db).check(person, "p", item, v=ok_value)


def test_a_new_object_with_only_its_foreign_key_is_decided_by_the_key(db: Session) -> None:
    """``Doc(owner_id=1)``, added and not flushed: ``target.owner == subject`` read the unset
    relationship (None) and said False, True after the flush (and in ``filter``)."""
    policy = Policy(["edit", "comment"])
    policy.allow("edit", subject=Person, target=Item, when=target.owner == subject)
    policy.allow("comment", subject=Person, target=Item, when=~(target.owner == subject))
    authz = Authorizer(policy, db)
    person = db.get(Person, 1)
    new = Item(id=2, owner_id=1)
    assert authz.check(person, "edit", new)  # transient
    assert not authz.check(person, "comment", new)
    db.add(new)
    assert authz.check(person, "edit", new)  # pending
    assert not authz.check(person, "comment", new)
    assert authz.check_many(person, "edit", [new]) == {2: True}
    assert 2 in db.scalars(authz.filter(person, "edit", sa.select(Item.id))).all()  # (flushes)
    assert authz.check(person, "edit", new)
    assert not authz.check(person, "comment", new)
    other = Item(id=3, owner_id=1, owner=None)  # the relationship set to None: it wins
    assert not authz.check(person, "edit", other)


class Grade(enum.Enum):
    admin = "Administrator"
    member = "Member"


class Seat(Base):
    __tablename__ = "t_seats"
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(sa.ForeignKey("t_people.id"))
    grade: Mapped[Grade | None]
    title: Mapped[str | None] = mapped_column(sa.String(20))


Person.seats = relationship(Seat)  # type: ignore[attr-defined]


def test_roles_read_from_an_enum_column_are_refused() -> None:
    """An Enum column's Python values are members (``Grade.admin``), its SQL values the stored
    names: compared with role names, the Python and SQL answers differed."""
    roles = RolePolicy([Role("admin", ["p"])], lambda *a, **k: None, lambda *a, **k: None)
    policy = Policy(["p"])
    with pytest.raises(RuleNotTranslatable, match="grade is an Enum column"):
        policy.allow(
            "p", subject=Person, target=Item, when=subject.seats.any(roles.grants(it.grade, "p"))
        )
    policy.allow(
        "p", subject=Person, target=Item, when=subject.seats.any(roles.grants(it.title, "p"))
    )
