"""bastion.authorizer: check / authorize / filter through a real session, SQLite and PostgreSQL.

The data set (``_unit_models.populate``) and who may do what on it:

=====  ======  ======  =========  =====  =====  ====  ===========================
doc    status  public  level      owner  org    tags  note
=====  ======  ======  =========  =====  =====  ====  ===========================
1      draft   no      1          alice  acme   urg.
2      review  yes     5          alice  --
3      NULL    NULL    NULL       bob    globex urg.  every nullable column NULL
4      final   no      2          --     acme         one comment
5      draft   no      7          bob    acme         an Invoice
=====  ======  ======  =========  =====  =====  ====  ===========================

alice is an admin member of acme; bob a member of acme (role "member") and of globex (role NULL);
root is an ``Admin`` with ``is_admin`` and no memberships.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, aliased, make_transient_to_detached, selectinload

from _unit_models import (
    Admin,
    Base,
    Document,
    Invoice,
    Org,
    Unmapped,
    User,
    populate,
)
from bastion import (
    Authorizer,
    BastionError,
    InvalidArgument,
    MissingContext,
    NotAuthorized,
    PermissionNotFound,
    Policy,
    RuleNotTranslatable,
    UnmappedClass,
    ctx,
    it,
    subject,
    target,
)

EXPECTED = {
    # public | owner | member of the doc's org
    "read": {"alice": {1, 2, 4, 5}, "bob": {1, 2, 3, 4, 5}, "root": {2}},
    # owner | admin of the doc's org
    "edit": {"alice": {1, 2, 4, 5}, "bob": {3, 5}, "root": set()},
    # not a draft (NULL status: neither draft nor not-draft)
    "view": {"alice": {2, 4}, "bob": {2, 4}, "root": {2, 4}},
    # an admin sees everything; others what they own
    "audit": {"alice": {1, 2}, "bob": {3, 5}, "root": {1, 2, 3, 4, 5}},
    # not a member of the doc's org (NOT EXISTS two levels deep, the correlation trap) | level > 4
    "outsider": {"alice": {2, 3, 5}, "bob": {2, 5}, "root": {1, 2, 3, 4, 5}},
}


def build_policy() -> Policy:
    policy = Policy(
        ["read", "edit", "view", "audit", "outsider", "level", "manage", "tagged", "script"]
    )
    policy.allow(
        "read",
        subject=User,
        target=Document,
        when=target.is_public
        | (target.owner_id == subject.id)
        | subject.memberships.any(it.org_id == target.org_id),
    )
    policy.allow(
        "edit",
        subject=User,
        target=Document,
        when=(target.owner == subject)
        | subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin")),
    )
    policy.allow("view", subject=User, target=Document, when=~(target.status == "draft"))
    policy.allow(
        "audit", subject=User, target=Document, when=subject.is_admin | (target.owner == subject)
    )
    policy.allow(
        "outsider",
        subject=User,
        target=Document,
        when=~subject.memberships.any(it.org_id == target.org_id) | (target.level > 4),
    )
    policy.allow(
        "level", subject=User, target=Document, when=target.is_public | (target.level <= ctx.max)
    )
    policy.allow("manage", subject=User, when=subject.memberships.any(it.role == "admin"))
    policy.allow("tagged", subject=User, target=Document, when=target.tags.any(it.name == ctx.tag))
    policy.allow(
        "script",
        subject=User,
        target=Document,
        when=lambda user, doc: doc.title.startswith("a"),
        check_only=True,
    )
    return policy


@pytest.fixture
def db(session: Session, engine: Engine) -> dict[str, Any]:
    Base.metadata.create_all(engine)
    populate(session)
    session.expunge_all()
    return {}


@pytest.fixture
def authorizer(session: Session, db: dict[str, Any]) -> Authorizer:
    return Authorizer(build_policy(), session)


@pytest.fixture
def offline() -> Iterator[Authorizer]:
    """An authorizer on an empty in-memory database: for calls refused before any SQL runs."""
    engine = sa.create_engine("sqlite://")
    with Session(engine) as session:
        yield Authorizer(build_policy(), session)
    engine.dispose()


def detached(obj: Any) -> Any:
    make_transient_to_detached(obj)
    return obj


ALICE = detached(User(id=1, name="alice", is_admin=False))
ROOT = detached(Admin(id=3, name="root", is_admin=True))


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(engine, "before_cursor_execute", record)


def user(session: Session, name: str, *, loaded: bool = True) -> User:
    """A user; ``loaded`` loads its memberships too (what the Python path may need)."""
    options = [selectinload(User.memberships)] if loaded else []
    stmt = sa.select(User).where(User.name == name).options(*options)
    return session.scalars(stmt).one()


def documents(session: Session) -> list[Document]:
    """Every document with every relationship a rule may read loaded."""
    stmt = (
        sa.select(Document)
        .options(selectinload(Document.tags), selectinload(Document.owner))
        .order_by(Document.id)
    )
    return list(session.scalars(stmt))


def ids(session: Session, stmt: sa.Select[Any]) -> set[int]:
    """The document ids a statement returns (its first column: a Document or an id)."""
    return {x.id if isinstance(x, Document) else x for x in session.scalars(stmt)}


# -- check -----------------------------------------------------------------------------------


CASES = [(p, n) for p in sorted(EXPECTED) for n in ("alice", "bob", "root")]


def test_check_on_loaded_objects_issues_no_sql(
    authorizer: Authorizer, session: Session, statements: list[str]
) -> None:
    docs = documents(session)
    for permission, name in CASES:
        who = user(session, name)
        statements.clear()
        allowed = {d.id for d in docs if authorizer.check(who, permission, d)}
        assert statements == [], (permission, name)
        assert allowed == EXPECTED[permission][name], (permission, name)


def test_check_on_an_unloaded_object_issues_one_select_exists(
    authorizer: Authorizer, session: Session, statements: list[str]
) -> None:
    queried = 0
    for permission, name in CASES:
        who = user(session, name)
        for doc in documents(session):
            pk = doc.id
            session.expire(doc)
            statements.clear()
            expected = pk in EXPECTED[permission][name]
            assert authorizer.check(who, permission, doc) is expected, (permission, name, pk)
            # one query, or none when the subject alone decides (root's is_admin for "audit")
            assert len(statements) <= 1, (permission, name, pk, statements)
            assert all(s.startswith("SELECT EXISTS") for s in statements)
            assert doc.__dict__.keys() <= {"_sa_instance_state"}  # the doc was not refreshed
            queried += len(statements)
    # root's 'audit' and 'outsider' are decided by root alone (5 documents each)
    assert queried == len(CASES) * 5 - 10


def test_check_with_an_unloaded_subject_relationship_issues_one_query(
    authorizer: Authorizer, session: Session, statements: list[str]
) -> None:
    bob = user(session, "bob", loaded=False)
    doc4 = documents(session)[3]  # not public, no owner, acme: only the membership decides
    statements.clear()
    assert authorizer.check(bob, "read", doc4) is True
    assert len(statements) == 1
    assert "memberships" not in bob.__dict__  # answered in SQL, nothing lazy-loaded


def test_check_subject_only_permission(
    authorizer: Authorizer, session: Session, statements: list[str]
) -> None:
    for name, expected in (("alice", True), ("bob", False), ("root", False)):
        loaded = user(session, name)
        statements.clear()
        assert authorizer.check(loaded, "manage") is expected
        assert authorizer.check(loaded, "manage", None) is expected
        assert statements == []
        session.expunge_all()
        # the subject's relationship not loaded: one query, no lazy load
        unloaded = user(session, name, loaded=False)
        statements.clear()
        assert authorizer.check(unloaded, "manage") is expected
        assert len(statements) == 1
        assert "memberships" not in unloaded.__dict__
        session.expunge_all()


def test_check_with_context(authorizer: Authorizer, session: Session) -> None:
    alice, docs = user(session, "alice"), documents(session)
    assert {d.id for d in docs if authorizer.check(alice, "level", d, max=2)} == {1, 2, 4}
    assert {d.id for d in docs if authorizer.check(alice, "tagged", d, tag="urgent")} == {1, 3}
    for doc in docs:
        session.expire(doc)
    assert {d.id for d in docs if authorizer.check(alice, "level", d, max=2)} == {1, 2, 4}


def test_check_only_rule_checks_but_does_not_filter(
    authorizer: Authorizer, session: Session
) -> None:
    alice = user(session, "alice")
    docs = documents(session)
    assert {d.id for d in docs if authorizer.check(alice, "script", d)} == {1, 2}
    session.expire(docs[0])
    assert authorizer.check(alice, "script", docs[0]) is True  # loaded the ordinary way
    with pytest.raises(RuleNotTranslatable):
        authorizer.filter(alice, "script", Document)


def test_authorize(authorizer: Authorizer, session: Session) -> None:
    alice, docs = user(session, "alice"), documents(session)
    assert authorizer.authorize(alice, "read", docs[0]) is None  # type: ignore[func-returns-value]
    with pytest.raises(NotAuthorized) as info:
        authorizer.authorize(alice, "read", docs[2])
    assert info.value.subject is alice
    assert info.value.permission == "read"
    assert info.value.target is docs[2]
    with pytest.raises(NotAuthorized) as info:
        authorizer.authorize(user(session, "bob"), "manage")
    assert info.value.target is None


@pytest.mark.parametrize("what", [42, "doc", Unmapped(), object()], ids=repr)
def test_check_on_a_wrong_type_of_target_is_a_bastion_error(offline: Authorizer, what: Any) -> None:
    with pytest.raises(BastionError):
        offline.check(ALICE, "read", what)
    with pytest.raises(BastionError):
        offline.authorize(ALICE, "read", what)


def test_check_with_unknown_or_unhashable_permission(offline: Authorizer) -> None:
    doc = Document(id=1)
    with pytest.raises(PermissionNotFound):
        offline.check(ALICE, "raed", doc)
    with pytest.raises(InvalidArgument):
        offline.check(ALICE, ["read"], doc)  # type: ignore[arg-type]


def test_authorizer_needs_a_policy(offline: Authorizer) -> None:
    with pytest.raises(InvalidArgument):
        Authorizer("policy", offline.session)  # type: ignore[arg-type]


def test_check_of_a_new_object_after_commit(authorizer: Authorizer, session: Session) -> None:
    # After commit() the subject is expired; a new (transient or pending) document has no row to
    # query, so the answer must come from its in-memory values, not from `SELECT ... WHERE id =`
    alice = user(session, "alice")
    session.commit()  # expires alice
    draft = Document(id=50, title="new", is_public=False, owner_id=alice.id)
    session.expire(alice)
    assert authorizer.check(alice, "read", draft) is True
    session.add(draft)
    session.expire(alice)
    assert authorizer.check(alice, "read", draft) is True


def test_missing_context_is_reported_even_when_another_branch_allows(
    offline: Authorizer,
) -> None:
    # "level" is `target.is_public | (target.level <= ctx.max)`. For a public document the rule
    # is TRUE without ctx.max, but a missing context value is a programming error all the same,
    # and whether it surfaces must not depend on the row (or the subject) at hand.
    with pytest.raises(MissingContext):
        offline.check(ALICE, "level", Document(is_public=False, level=1))
    with pytest.raises(MissingContext):
        offline.check(ALICE, "level", Document(is_public=True, level=1))


def test_a_subject_without_the_attribute_is_unknown_on_both_paths(offline: Authorizer) -> None:
    # GUIDE: a missing attribute is treated like NULL (as CEL and OPA do). The SQL path binds
    # NULL for it; the Python path must not raise AttributeError instead.
    policy = Policy(["read"])
    policy.allow("read", target=Document, when=target.owner_id == subject.id)
    authorizer = Authorizer(policy, offline.session)

    class Anonymous:
        pass

    stmt = authorizer.filter(Anonymous(), "read", Document)
    assert "owner_user_id" not in str(stmt.whereclause)  # `owner_id = NULL` folded: no row
    assert authorizer.check(Anonymous(), "read", Document(owner_id=1)) is False


# -- filter ----------------------------------------------------------------------------------


def test_filter_a_class_with_and_without_union_branches(
    session: Session, db: dict[str, Any]
) -> None:
    union, plain = (Authorizer(build_policy(), session, union_branches=u) for u in (True, False))
    for permission, name in CASES:
        who = user(session, name)
        with_union = ids(session, union.filter(who, permission, Document))
        without = ids(session, plain.filter(who, permission, Document))
        assert with_union == without == EXPECTED[permission][name], (permission, name)


def test_union_branches_shape(offline: Authorizer) -> None:
    union = offline.filter(ALICE, "read", Document)
    plain = Authorizer(offline.policy, offline.session, union_branches=False).filter(
        ALICE, "read", Document
    )
    assert "UNION ALL" in str(union)
    assert "UNION" not in str(plain)
    for stmt in (union, plain):
        assert stmt.get_final_froms() == [Document.__table__]
        assert "DISTINCT" not in str(stmt)


def test_union_branches_per_dialect(offline: Authorizer) -> None:
    """Flat branches (the row's own columns, uncorrelated subject sets): a UNION of indexed
    branches on SQLite, the plain OR on PostgreSQL (bitmap index scans read each row once), in
    parentheses wherever the filter lands. A branch through a target relationship (EXISTS)
    keeps the UNION on PostgreSQL too: ORed, it would make the planner scan the table."""
    flat = offline.filter(ALICE, "read", sa.select(Document.id).where(Document.level > 1))
    on_sqlite = str(flat.compile(dialect=sqlite.dialect()))
    on_postgresql = " ".join(str(flat.compile(dialect=postgresql.dialect())).split())
    assert "UNION ALL" in on_sqlite
    assert "UNION" not in on_postgresql
    assert on_postgresql.endswith(
        "WHERE documents.level > %(level_1)s::INTEGER AND (documents.is_public = %(param_1)s "
        "OR documents.owner_user_id = %(param_2)s::INTEGER OR documents.org_id = ANY(ARRAY("
        "SELECT bastion_it_memberships_1.org_id FROM memberships AS bastion_it_memberships_1 "
        "WHERE bastion_it_memberships_1.user_id = %(user_id_1)s::INTEGER)))"
    )
    policy = Policy(["tag"])
    policy.allow(
        "tag",
        subject=User,
        target=Document,
        when=target.is_public | target.tags.any(it.name == "x"),
    )
    correlated = Authorizer(policy, offline.session).filter(ALICE, "tag", Document)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        assert "UNION ALL" in str(correlated.compile(dialect=dialect))


def test_bitmap_friendly() -> None:
    from bastion.rules.constructs import bitmap_friendly, key_in

    docs = Document.__table__
    other = sa.select(Org.id).where(Org.name == "x")
    assert bitmap_friendly(docs.c.is_public == sa.true(), docs)
    assert bitmap_friendly(key_in(docs.c.org_id, other), docs)
    assert bitmap_friendly(sa.and_(docs.c.level > 1, docs.c.org_id.in_([1, 2])), docs)
    assert not bitmap_friendly(docs.c.org_id.in_(other), docs)  # a hashed SubPlan: no index
    assert not bitmap_friendly(sa.exists().where(Org.id == docs.c.org_id), docs)
    correlated = sa.select(Org.id).where(Org.id == docs.c.org_id)
    assert not bitmap_friendly(key_in(docs.c.org_id, correlated), docs)


def test_filter_agrees_with_check(authorizer: Authorizer, session: Session) -> None:
    docs = documents(session)
    for permission, name in CASES:
        who = user(session, name)
        checked = {d.id for d in docs if authorizer.check(who, permission, d)}
        assert ids(session, authorizer.filter(who, permission, Document)) == checked


def test_filter_a_select_and_compose(authorizer: Authorizer, session: Session) -> None:
    alice = user(session, "alice")
    # a Select of columns: the caller's select list and FROM are kept
    base = sa.select(Document.title, Document.id)
    stmt = authorizer.filter(alice, "read", base)
    assert [c["name"] for c in stmt.column_descriptions] == ["title", "id"]
    assert stmt.get_final_froms() == base.get_final_froms()
    assert {row.id for row in session.execute(stmt)} == {1, 2, 4, 5}
    assert set(session.scalars(authorizer.filter(alice, "read", sa.select(Document.id)))) == {
        1,
        2,
        4,
        5,
    }
    # where / order_by / limit / offset / join / count on the result
    stmt = authorizer.filter(alice, "read", Document)
    page = stmt.where(Document.level > 1).order_by(Document.id.desc()).limit(2).offset(1)
    assert [d.id for d in session.scalars(page)] == [4, 2]
    assert session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery())) == 4
    joined = stmt.join(Document.org).where(Org.plan == "pro")
    assert {d.id for d in session.scalars(joined)} == {1, 4, 5}
    # a Select that already joins
    stmt = authorizer.filter(alice, "read", sa.select(Document, Org).join(Document.org))
    assert {doc.id for doc, _ in session.execute(stmt)} == {1, 4, 5}
    # filtering a filtered statement intersects
    bob = user(session, "bob")
    stmt = authorizer.filter(bob, "edit", authorizer.filter(bob, "view", Document))
    assert ids(session, stmt) == set()
    stmt = authorizer.filter(bob, "read", authorizer.filter(bob, "edit", Document))
    assert ids(session, stmt) == {3, 5}


def test_filter_entities(authorizer: Authorizer, session: Session) -> None:
    alice, bob = user(session, "alice"), user(session, "bob")
    # an aliased entity, found in the Select
    d = aliased(Document, name="d")
    assert {doc.id for doc in session.scalars(authorizer.filter(alice, "read", sa.select(d)))} == {
        1,
        2,
        4,
        5,
    }
    # two documents in one statement: entity= says which one to filter (here: the alias d,
    # a document sharing its owner with another, that alice may edit)
    stmt = sa.select(Document.id, d.id).join(d, d.owner_id == Document.owner_id)
    filtered = authorizer.filter(alice, "edit", stmt, entity=d)
    assert {row[1] for row in session.execute(filtered)} == {1, 2, 5}
    # entity= when the first column is another entity
    by_org = sa.select(Org.name, Document.id).join(Document, Document.org_id == Org.id)
    filtered_by_org = authorizer.filter(alice, "read", by_org, entity=Document)
    assert {row.id for row in session.execute(filtered_by_org)} == {1, 4, 5}
    # a subclass is judged by its base's rules and keeps its discriminator
    assert ids(session, authorizer.filter(bob, "read", Invoice)) == {5}
    assert ids(session, authorizer.filter(alice, "view", Invoice)) == set()


@pytest.mark.parametrize(
    "query",
    [
        "documents",
        42,
        None,
        sa.text("SELECT 1"),
        sa.table("documents"),
        sa.select(Document).subquery(),
        sa.union(sa.select(Document.id), sa.select(Document.id)),
    ],
    ids=["str", "int", "None", "text", "table", "subquery", "union"],
)
def test_filter_refuses_what_is_not_a_select(offline: Authorizer, query: Any) -> None:
    with pytest.raises(InvalidArgument):
        offline.filter(ALICE, "read", query)


def test_filter_refuses_an_entityless_select(offline: Authorizer) -> None:
    with pytest.raises(InvalidArgument, match="entity="):
        offline.filter(ALICE, "read", sa.select(sa.literal(1)))


def test_filter_refuses_unmapped_classes(offline: Authorizer) -> None:
    with pytest.raises(UnmappedClass):
        offline.filter(ALICE, "read", Unmapped)
    with pytest.raises(UnmappedClass):
        offline.filter(ALICE, "read", sa.select(Document), entity=Unmapped)


def test_filter_refuses_an_unmapped_entity_with_a_class(offline: Authorizer) -> None:
    with pytest.raises(UnmappedClass):
        offline.filter(ALICE, "read", Document, entity=Unmapped)
    with pytest.raises(BastionError):
        offline.filter(ALICE, "read", Document, entity=42)


def test_filter_refuses_an_entity_the_select_does_not_have(offline: Authorizer) -> None:
    # entity=Org on a Select of documents would add `FROM documents, orgs`: a cross join that
    # returns every document (once per allowed org) as soon as one org is allowed
    policy = Policy(["read"])
    policy.allow("read", target=Org, when=target.plan == "pro")
    authorizer = Authorizer(policy, offline.session)
    with pytest.raises(InvalidArgument):
        authorizer.filter(ALICE, "read", sa.select(Document), entity=Org)


def test_filter_for_an_admin_adds_no_where(offline: Authorizer) -> None:
    # subject.is_admin is TRUE: the rule folds to TRUE, and TRUE is no filter at all
    stmt = offline.filter(ROOT, "audit", Document)
    assert stmt.whereclause is None, str(stmt)


def test_filter_folds_the_subject_branch_for_others(offline: Authorizer) -> None:
    stmt = offline.filter(ALICE, "audit", Document)
    text = " ".join(str(stmt.compile(compile_kwargs={"literal_binds": True})).split())
    assert "is_admin" not in text
    assert text.endswith("WHERE documents.owner_user_id = 1")


def test_filter_with_context_and_cached_clauses(authorizer: Authorizer, session: Session) -> None:
    alice = user(session, "alice")
    assert ids(session, authorizer.filter(alice, "level", Document, max=2)) == {1, 2, 4}
    assert ids(session, authorizer.filter(alice, "tagged", Document, tag="misc")) == {3}
    with pytest.raises(MissingContext):
        authorizer.filter(alice, "level", Document)
    # filter clauses are cached per input values: each subject still gets its own rows
    for _ in range(2):
        for name in ("alice", "bob", "root"):
            stmt = authorizer.filter(user(session, name), "edit", Document)
            assert ids(session, stmt) == EXPECTED["edit"][name]
        for maximum, expected in ((1, {1, 2}), (2, {1, 2, 4}), (7, {1, 2, 4, 5})):
            stmt = authorizer.filter(user(session, "bob"), "level", Document, max=maximum)
            assert ids(session, stmt) == expected


def test_filter_for_a_transient_subject(offline: Authorizer) -> None:
    nobody = User(id=99, name="nobody", is_admin=False)
    assert offline.filter(nobody, "view", Document) is not None  # reads no subject value
    with pytest.raises(InvalidArgument, match="not persistent"):
        offline.filter(nobody, "read", Document)  # its memberships are rows it does not have


# -- values are parameters, never SQL text ---------------------------------------------------

EVIL = "x'; DROP TABLE documents; --"


def test_sql_metacharacters_are_bound_as_parameters(session: Session, db: dict[str, Any]) -> None:
    policy = Policy(["by_title", "by_status"])
    policy.allow("by_title", subject=User, target=Document, when=target.title == subject.name)
    policy.allow("by_status", subject=User, target=Document, when=target.status.in_(ctx.statuses))
    authorizer = Authorizer(policy, session)
    evil = User(id=10, name=EVIL)
    session.add_all([evil, Document(id=6, title=EVIL, status=EVIL)])
    session.commit()

    stmt = authorizer.filter(evil, "by_title", Document)
    assert EVIL not in str(stmt.compile(session.get_bind()))
    assert ids(session, stmt) == {6}
    stmt = authorizer.filter(evil, "by_status", Document, statuses=[EVIL, '"; --'])
    assert ids(session, stmt) == {6}
    session.expunge_all()
    doc = session.get(Document, 6)
    session.expire(doc)
    assert authorizer.check(evil, "by_status", doc, statuses=[EVIL]) is True

    assert sa.inspect(session.get_bind()).has_table("documents")
    assert session.scalar(sa.select(sa.func.count()).select_from(Document)) == 6
