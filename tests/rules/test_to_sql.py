"""bastion.rules.to_sql: the SQL each rule shape compiles to, as literal snapshots.

Every snapshot is ``SELECT documents.id FROM documents WHERE <the compiled rule>``, compiled with
``literal_binds`` for SQLite and PostgreSQL and compared after collapsing whitespace. Besides the
text, every statement is checked for the two promises of the module docstring: no ``DISTINCT``,
and the outer ``FROM`` list is only the caller's table (relationships are ``EXISTS``/``IN``
subqueries, never joins that multiply the caller's rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import aliased, make_transient_to_detached
from sqlalchemy.sql.elements import ColumnElement

from _unit_models import Admin, Document, Membership, Principal, User
from bastion import InvalidArgument, MissingContext, RuleNotTranslatable
from bastion.rules.dsl import as_rule, ctx, it, subject, target
from bastion.rules.nodes import UNKNOWN, Attr, Compare, Const, Context, Literal, Rule
from bastion.rules.to_sql import SQL_COMPILERS, SYMBOLIC, register_sql, to_sql

DIALECTS: dict[str, Dialect] = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
}


def _detached(obj: Any) -> Any:
    """A persistent-looking instance (it has an identity key) without a database."""
    make_transient_to_detached(obj)
    return obj


ALICE = User(id=1, name="alice", is_admin=False, clearance=3)
ALICE.memberships = [Membership(id=1, user_id=1, org_id=1, role="admin")]
_detached(ALICE)
BOB = _detached(User(id=2, name="bob", is_admin=False, clearance=None))
ROOT = _detached(Admin(id=3, name="root", is_admin=True, clearance=9))

SELECT = "SELECT documents.id FROM documents WHERE "


def compiled(clause: ColumnElement[bool], dialect: str, entity: Any = Document) -> str:
    stmt = sa.select(entity.id).where(clause)
    text = stmt.compile(dialect=DIALECTS[dialect], compile_kwargs={"literal_binds": True})
    _assert_shape(stmt, str(text), entity)
    return " ".join(str(text).split())


def _assert_shape(stmt: sa.Select[Any], text: str, entity: Any) -> None:
    assert "DISTINCT" not in text.upper()
    assert stmt.get_final_froms() == [sa.inspect(entity).selectable]


def sql(rule: object, dialect: str, subj: Any = ALICE, **context: Any) -> str:
    """The statement with subqueries over the subject's relationships (see test_inlined_*)."""
    return compiled(to_sql(as_rule(rule), Document, subj, context, inline_loaded=False), dialect)


@pytest.fixture(params=sorted(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- one expected WHERE per dialect (a plain string when both agree) -------------------------

EXISTS_TAGS = (
    "EXISTS (SELECT 1 FROM tags AS bastion_it_tags_1, document_tags AS document_tags_1 "
    "WHERE documents.id = document_tags_1.document_id "
    "AND bastion_it_tags_1.id = document_tags_1.tag_id AND bastion_it_tags_1.name = 'urgent')"
)
_MEMBER_ROWS = (  # the subject's rows by their foreign key: no join with users
    "SELECT bastion_it_memberships_1.org_id "
    "FROM memberships AS bastion_it_memberships_1 "
    "WHERE bastion_it_memberships_1.user_id = 1{extra}"
)


class _MemberIn:
    """``IN (subquery)``, spelled ``= ANY(ARRAY(subquery))`` on PostgreSQL (an InitPlan)."""

    @staticmethod
    def format(extra: str) -> dict[str, str]:
        rows = _MEMBER_ROWS.format(extra=extra)
        return {
            "sqlite": f"documents.org_id IN ({rows})",
            "postgresql": f"documents.org_id = ANY(ARRAY({rows}))",
        }


MEMBER_IN = _MemberIn()
MEMBER_EXISTS = (
    "EXISTS (SELECT 1 AS anon_1 FROM users AS bastion_subject_users_1 "
    "WHERE bastion_subject_users_1.id = 1 AND (EXISTS (SELECT 1 "
    "FROM memberships AS bastion_it_memberships_1 "
    "WHERE bastion_subject_users_1.id = bastion_it_memberships_1.user_id "
    "AND bastion_it_memberships_1.org_id = documents.org_id)))"
)

SNAPSHOTS: list[tuple[str, object, str | dict[str, str]]] = [
    ("comparison", target.status == "draft", "documents.status = 'draft'"),
    (
        # owner_id is the column owner_user_id: the SQL names the column
        "comparison with a subject value",
        target.owner_id == subject.id,
        "documents.owner_user_id = 1",
    ),
    ("ordering with context", target.level <= ctx.clearance, "documents.level <= 5"),
    (
        "boolean column",
        target.is_public,
        {"sqlite": "documents.is_public = 1", "postgresql": "documents.is_public = true"},
    ),
    (
        "negated boolean column",
        ~target.is_public,
        {"sqlite": "documents.is_public != 1", "postgresql": "documents.is_public != true"},
    ),
    ("is null", target.status == None, "documents.status IS NULL"),  # noqa: E711
    ("is not null", target.status.is_not(None), "documents.status IS NOT NULL"),
    ("in list", target.status.in_(["draft", "review"]), "documents.status IN ('draft', 'review')"),
    ("in list with null", target.status.in_(["a", None]), "documents.status IN ('a', NULL)"),
    ("empty in folds to false", target.status.in_([]), {"sqlite": "0 = 1", "postgresql": "false"}),
    (
        "empty not in folds to true",
        target.status.not_in([]),
        {"sqlite": "1 = 1", "postgresql": "true"},
    ),
    ("in a subject collection", target.org_id.in_(subject.org_ids), "documents.org_id IN (1)"),
    ("in a context list", target.level.in_(ctx.levels), "documents.level IN (1, 2)"),
    (
        "many-to-one has",
        target.org.has(it.plan == "pro"),
        {
            "sqlite": "EXISTS (SELECT 1 FROM orgs AS bastion_it_orgs_1 "
            "WHERE bastion_it_orgs_1.id = documents.org_id "
            "AND bastion_it_orgs_1.\"plan\" = 'pro')",
            "postgresql": "EXISTS (SELECT 1 FROM orgs AS bastion_it_orgs_1 "
            "WHERE bastion_it_orgs_1.id = documents.org_id AND bastion_it_orgs_1.plan = 'pro')",
        },
    ),
    (
        "many-to-one has without condition",
        target.org.has(),
        "EXISTS (SELECT 1 FROM orgs WHERE orgs.id = documents.org_id)",
    ),
    (
        "one-to-many any",
        target.comments.any(it.body == "hello"),
        "EXISTS (SELECT 1 FROM comments AS bastion_it_comments_1 "
        "WHERE documents.id = bastion_it_comments_1.document_id "
        "AND bastion_it_comments_1.body = 'hello')",
    ),
    ("many-to-many any", target.tags.any(it.name == "urgent"), EXISTS_TAGS),
    ("not many-to-many any", ~target.tags.any(it.name == "urgent"), f"NOT ({EXISTS_TAGS})"),
    (
        "subject relationship: IN form when positive",
        subject.memberships.any(it.org_id == target.org_id),
        MEMBER_IN.format(extra=""),
    ),
    (
        "subject relationship: IN form keeps the other conditions",
        subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin")),
        MEMBER_IN.format(extra=" AND bastion_it_memberships_1.role = 'admin'"),
    ),
    (
        "subject relationship: EXISTS form under NOT",
        ~subject.memberships.any(it.org_id == target.org_id),
        f"NOT ({MEMBER_EXISTS})",
    ),
    (
        "relationship is subject: the foreign key",
        target.owner == subject,
        "documents.owner_user_id = 1",
    ),
    (
        "relationship is subject under NOT: EXISTS (a NULL owner is not the subject)",
        ~(target.owner == subject),
        "NOT (EXISTS (SELECT 1 FROM users AS bastion_it_users_1 "
        "WHERE bastion_it_users_1.id = documents.owner_user_id AND bastion_it_users_1.id = 1))",
    ),
    (
        "members of a many-to-one include the subject",
        target.org.has(members=subject),
        "EXISTS (SELECT 1 FROM orgs AS bastion_it_orgs_1 "
        "WHERE bastion_it_orgs_1.id = documents.org_id AND (EXISTS (SELECT 1 "
        "FROM users AS bastion_it_users_2, memberships AS memberships_1 "
        "WHERE bastion_it_orgs_1.id = memberships_1.org_id "
        "AND bastion_it_users_2.id = memberships_1.user_id AND bastion_it_users_2.id = 1)))",
    ),
    (
        "two levels deep, correlated with the outer table",
        target.org.has(it.members.any(it.id == target.owner_id)),
        "EXISTS (SELECT 1 FROM orgs AS bastion_it_orgs_1 "
        "WHERE bastion_it_orgs_1.id = documents.org_id AND (EXISTS (SELECT 1 "
        "FROM users AS bastion_it_users_2, memberships AS memberships_1 "
        "WHERE bastion_it_orgs_1.id = memberships_1.org_id "
        "AND bastion_it_users_2.id = memberships_1.user_id "
        "AND bastion_it_users_2.id = documents.owner_user_id)))",
    ),
    (
        "a subject-only branch folds away for a non-admin",
        subject.is_admin | (target.owner_id == subject.id),
        "documents.owner_user_id = 1",
    ),
]


@pytest.mark.parametrize(
    ("rule", "expected"), [(r, e) for _, r, e in SNAPSHOTS], ids=[n for n, _, _ in SNAPSHOTS]
)
def test_snapshot(rule: object, expected: str | dict[str, str], dialect: str) -> None:
    where = expected if isinstance(expected, str) else expected[dialect]
    assert sql(rule, dialect, clearance=5, levels=[1, 2]) == SELECT + where


def test_many_to_many_keeps_the_secondary_table_inside_exists(dialect: str) -> None:
    text = sql(target.tags.any(it.name == "urgent"), dialect)
    outer, _, inner = text.partition("EXISTS (")
    assert outer == SELECT
    assert "document_tags" in inner
    assert "JOIN" not in text


# -- partial evaluation: what the subject and context decide is folded -----------------------


def test_subject_only_branch_folds_to_true_for_an_admin() -> None:
    clause = to_sql(as_rule(subject.is_admin | (target.owner_id == subject.id)), Document, ROOT)
    assert isinstance(clause, sa.sql.elements.True_)


@pytest.mark.parametrize(
    ("rule", "subj", "folded"),
    [
        (subject.is_admin, ROOT, True),
        (subject.is_admin, ALICE, False),
        (subject.clearance > 2, ALICE, True),
        (subject.clearance > 2, BOB, None),  # NULL clearance: UNKNOWN
        (subject.id.in_([1, 2]), ALICE, True),
        (ctx.ip == "10.0.0.1", ALICE, True),
        ((subject.clearance > 5) & (target.level > 1), ALICE, False),
        ((subject.clearance > 2) | (target.level > 1), ALICE, True),
        (target.owner == subject, Principal(id=1), False),  # not a mapped subject: no row
        (target.org_id.in_(subject.org_ids), Principal(org_ids=()), False),
    ],
    ids=str,
)
def test_subject_and_context_values_fold(rule: object, subj: Any, folded: bool | None) -> None:
    clause = to_sql(as_rule(rule), Document, subj, {"ip": "10.0.0.1"})
    expected = {True: sa.true(), False: sa.false(), None: sa.cast(sa.null(), sa.Boolean)}[folded]
    assert str(clause.compile()) == str(expected.compile())


def test_symbolic_subject_compiles_to_parameters() -> None:
    # registration compiles with SYMBOLIC: subject values and context are bind parameters
    text = str(
        to_sql(
            as_rule((target.owner_id == subject.id) | (target.level <= ctx.max)), Document
        ).compile()
    )
    assert ":subject_id_" in text
    assert ":ctx_max_" in text
    assert to_sql(as_rule(target.level == 1), Document, SYMBOLIC) is not None


# -- three-valued logic: UNKNOWN is kept exactly where it matters ----------------------------


def test_not_unknown_is_unknown() -> None:
    # bob's clearance is NULL: `clearance == 1` is UNKNOWN, and so is its negation
    assert sql(~(subject.clearance == 1), "postgresql", BOB) == SELECT + "CAST(NULL AS BOOLEAN)"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # positive polarity: UNKNOWN and FALSE drop the row alike, so they fold
        ((target.status == "a") & (subject.clearance == 1), "false"),
        ((target.status == "a") | (subject.clearance == 1), "documents.status = 'a'"),
        # under NOT the typed NULL stays: NOT (FALSE AND NULL) is TRUE, NOT (TRUE AND NULL) NULL
        (
            ~((target.status == "a") & (subject.clearance == 1)),
            "NOT (documents.status = 'a' AND CAST(NULL AS BOOLEAN))",
        ),
        (
            ~((target.status == "a") | (subject.clearance == 1)),
            "NOT (documents.status = 'a' OR CAST(NULL AS BOOLEAN))",
        ),
        (~~((target.status == "a") & (subject.clearance == 1)), "false"),
        (~(target.status == "a"), "documents.status != 'a'"),
    ],
    ids=str,
)
def test_unknown_in_junctions(rule: object, expected: str) -> None:
    assert sql(rule, "postgresql", BOB) == SELECT + expected


def test_unknown_constant_is_a_typed_null(dialect: str) -> None:
    # SQLite has no boolean type and compares the NULL with 1: NULL all the same
    where = {"sqlite": "CAST(NULL AS BOOLEAN) = 1", "postgresql": "CAST(NULL AS BOOLEAN)"}
    assert sql(UNKNOWN, dialect) == SELECT + where[dialect]


def test_comparison_with_a_null_value_is_unknown_not_is_null() -> None:
    # `col == :v` with v NULL must not become `col IS NULL` (SQLAlchemy's == None would)
    rule = Compare(Attr("target", "status"), "==", Context("v"))
    clause = to_sql(rule, Document, ALICE, {"v": None})
    assert str(clause.compile(dialect=DIALECTS["postgresql"])) == "CAST(NULL AS BOOLEAN)"


# -- entities --------------------------------------------------------------------------------


def test_aliased_entity(dialect: str) -> None:
    d = aliased(Document, name="d")
    rule = as_rule(target.tags.any(it.name == "x") & (target.owner_id == subject.id))
    assert compiled(to_sql(rule, d, ALICE), dialect, entity=d) == (
        "SELECT d.id FROM documents AS d WHERE (EXISTS (SELECT 1 "
        "FROM tags AS bastion_it_tags_1, document_tags AS document_tags_1 "
        "WHERE d.id = document_tags_1.document_id AND bastion_it_tags_1.id = "
        "document_tags_1.tag_id AND bastion_it_tags_1.name = 'x')) AND d.owner_user_id = 1"
    )


# -- errors ----------------------------------------------------------------------------------


def test_missing_context_value() -> None:
    with pytest.raises(MissingContext) as info:
        to_sql(as_rule(target.level <= ctx.clearance), Document, ALICE, {})
    assert info.value.name == "clearance"


def test_subject_relationship_of_a_transient_subject_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="not persistent"):
        to_sql(as_rule(subject.memberships.any(it.role == "admin")), Document, User(id=9))


def test_subject_relationship_of_an_unmapped_subject_is_not_translatable() -> None:
    with pytest.raises(RuleNotTranslatable):
        to_sql(as_rule(subject.memberships.any(it.role == "admin")), Document, Principal())


def test_it_without_a_relationship_is_not_translatable() -> None:
    with pytest.raises(RuleNotTranslatable):
        to_sql(as_rule(it.name == "x"), Document, ALICE)


def test_column_used_as_relationship_is_not_translatable() -> None:
    with pytest.raises(RuleNotTranslatable, match="not a relationship"):
        to_sql(as_rule(target.title.any()), Document, ALICE)


# -- the registry ----------------------------------------------------------------------------


class _Custom(Rule):
    __slots__ = ()


@pytest.fixture
def custom_node() -> Iterator[type[_Custom]]:
    try:
        yield _Custom
    finally:
        SQL_COMPILERS.pop(_Custom, None)


def test_registry_refuses_double_registration(custom_node: type[_Custom]) -> None:
    register_sql(custom_node)(lambda node, env: True)
    with pytest.raises(ValueError, match="already registered"):
        register_sql(custom_node)(lambda node, env: False)
    register_sql(custom_node, replace=True)(lambda node, env: False)
    assert isinstance(to_sql(custom_node(), Document, ALICE), sa.sql.elements.False_)


def test_unknown_node_kind_is_not_translatable() -> None:
    with pytest.raises(RuleNotTranslatable, match="no SQL compiler"):
        to_sql(_Custom(), Document, ALICE)


def test_builtin_kinds_are_registered() -> None:
    assert Const in SQL_COMPILERS
    with pytest.raises(ValueError, match="already registered"):
        register_sql(Compare)(lambda node, env: True)


def test_literal_compare_of_two_values_folds() -> None:
    assert isinstance(
        to_sql(Compare(Literal(1), "<", Literal(2)), Document, ALICE), sa.sql.elements.True_
    )


# -- a loaded subject collection is written in as values -------------------------------------


@pytest.mark.parametrize(
    ("rule", "where"),
    [
        (subject.memberships.any(it.org_id == target.org_id), "documents.org_id IN (1)"),
        (
            subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin")),
            "documents.org_id IN (1)",
        ),
        (subject.memberships.any((target.org_id == it.org_id) & (it.role == "member")), None),
        (
            (target.level > 1) | subject.memberships.any(it.org_id == target.org_id),
            "documents.level > 1 OR documents.org_id IN (1)",
        ),
    ],
)
def test_inlined_loaded_collection(rule: object, where: str | None, dialect: str) -> None:
    clause = to_sql(as_rule(rule), Document, ALICE, {})
    if where is None:  # no member meets the condition: no row can match
        assert isinstance(clause, sa.sql.elements.False_)
    else:
        assert compiled(clause, dialect) == SELECT + where


@pytest.mark.parametrize(
    "rule",
    [
        ~subject.memberships.any(it.org_id == target.org_id),  # negative: NULLs would matter
        subject.memberships.any((it.org_id == target.org_id) & (it.role == target.title)),
        subject.memberships.any(it.org_id > target.org_id),  # not an equality
    ],
)
def test_not_inlined_keeps_the_subquery(rule: object, dialect: str) -> None:
    text = compiled(to_sql(as_rule(rule), Document, ALICE, {}), dialect)
    assert "memberships" in text
