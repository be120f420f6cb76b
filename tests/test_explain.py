"""``explain``, ``explain_filter`` and ``NotAuthorized.explanation``, on SQLite and PostgreSQL.

The data is ``_pages_world.WHO`` and the policy the combined scenario's (``build_policy``): each
test names the subject, object and branch it expects, for allows and for denials.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from _pages_world import (
    WHO,
    Comment,
    Document,
    Folder,
    Seat,
    User,
    build_policy,
    create_schema,
    load,
)
from bastion import Authorizer, NotAuthorized, Policy, RuleNotTranslatable, target
from bastion.authorizer import FilterBranch, FilterExplanation
from bastion.rules.explain import Explanation

POLICY = build_policy()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    create_schema(engine)
    with Session(engine) as session:
        load(session, WHO)
        yield session


@pytest.fixture
def authz(db: Session) -> Authorizer:
    return Authorizer(POLICY, db)


def explain(authz: Authorizer, user: int, permission: str, obj: Any = None) -> Explanation:
    return authz.explain(authz.session.get(User, user), permission, obj)


def doc(authz: Authorizer, n: int) -> Any:
    return authz.session.get(Document, n)


def reasons(e: Explanation) -> list[str]:
    """Every node's reason, depth first."""
    return [e.reason] + [r for c in e.children for r in reasons(c)]


def rule_node(e: Explanation, name: str) -> Explanation:
    """The child of a decision for the registered rule ``name``."""
    found = [c for c in e.children if c.kind == "rule" and c.rule == name]
    assert len(found) == 1, [c.rule for c in e.children]
    return found[0]


def matched(e: Explanation) -> list[str]:
    return [m.reason for m in e.matched()]


# -- stored grants, tier by tier ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "permission", "n", "branch"),
    [
        (1, "doc.read", 1, "direct → permission doc.read in org 1"),
        (2, "doc.read", 2, "bundle readers → permission doc.read in org 2"),
        (3, "doc.read", 3, "group staff → permission doc.read in org 3"),
        (4, "doc.read", 2, "group team → bundle readers → permission doc.read (global grant)"),
        (1, "doc.edit", 2, "direct → permission doc.edit in Document 2"),
        (3, "doc.edit", 3, "group staff → permission doc.edit in Document 3"),
    ],
)
def test_an_allowed_grant_names_its_tier(
    authz: Authorizer, user: int, permission: str, n: int, branch: str
) -> None:
    e = explain(authz, user, permission, doc(authz, n))
    assert e.allowed
    assert e.outcome is True
    grants = [n for n in _walk(e) if n.kind == "HasGrant" and n.reason == branch]
    assert [g.outcome for g in grants] == [True]
    assert matched(e)[0].startswith(f"User #{user} may {permission!r} on Document #{n}: allowed")


def test_an_object_grant_on_a_subclass_names_its_tier(engine: Engine) -> None:
    """A grant on an ``Invoice(Document)`` is stored under the hierarchy's base class name."""
    from grants.schema import Invoice, create_permissions, world
    from grants.schema import User as GrantUser

    with world(engine) as w:
        create_permissions(w.store)
        invoice, user = w.session.get(Invoice, 7), w.session.get(GrantUser, 1)
        w.store.grant(user, permission="doc.delete", scope=invoice)
        e = w.authz.explain(user, "doc.delete", invoice)
        assert e.allowed
        assert matched(e)[-1] == "direct → permission doc.delete in Document 7"


def test_a_missing_grant_says_where_it_looked(authz: Authorizer) -> None:
    # 7 is in group staff only through an edge scoped to org 1: staff's grant is for org 3
    e = explain(authz, 7, "doc.read", doc(authz, 1))
    grant = [c for c in rule_node(e, "readers").children[0].children if c.kind == "HasGrant"]
    assert grant[0].outcome is False
    assert grant[0].reason == (
        "no grant of doc.read globally or in org 1 among the subject's 0 effective grants"
    )
    # an expired grant and one not yet valid are not effective
    for user in (5, 6):
        e = explain(authz, user, "doc.read", doc(authz, 2))
        grants = [n for n in _walk(e) if n.kind == "HasGrant"]
        assert [g.outcome for g in grants] == [False]
        assert grants[0].reason == (
            "no grant of doc.read globally or in org 2 among the subject's 0 effective grants"
        )


def test_objectless_permissions(authz: Authorizer) -> None:
    e = explain(authz, 4, "reports.view")
    assert e.allowed
    assert matched(e)[0] == (
        "User #4 may 'reports.view': allowed by rule "
        "\"(holds('reports.view') | (subject.is_staff == True))\""
    )
    assert matched(e)[-1] == "group team → permission reports.view (global grant)"
    staff = explain(authz, 6, "reports.view")
    assert staff.allowed
    assert matched(staff)[-1] == (
        "(subject.is_staff == True): true (subject.is_staff = True, True = True)"
    )
    expired = explain(authz, 5, "reports.view")
    assert not expired.allowed
    assert expired.reason == "User #5 may not 'reports.view': 1 rule(s) tried, none matched"


# -- rules, roles, relationships -----------------------------------------------------------------


def test_the_rule_that_allowed_is_named_with_its_class(authz: Authorizer) -> None:
    e = explain(authz, 2, "doc.edit", doc(authz, 1))  # 2 owns document 1
    assert (
        e.reason
        == "User #2 may 'doc.edit' on Document #1: allowed by rule 'roles:site' on Document"
    )
    editors = rule_node(e, "editors")
    assert editors.reason == "rule 'editors' on Document"
    assert editors.allowed
    owner = editors.children[0].children[0]
    assert owner.kind == "Related"
    assert owner.reason == "target.owner: 1 related, one matches"
    assert owner.children[0].reason == "User #2: User #2 is the subject"


def test_static_roles_on_a_column(authz: Authorizer) -> None:
    editor = explain(authz, 1, "doc.edit", doc(authz, 3))
    assert matched(editor)[1:] == [
        "rule 'roles:site' on Document",
        "role 'editor' holds 'doc.edit'",
    ]
    author = explain(authz, 2, "doc.edit", doc(authz, 1))
    assert matched(author)[2:] == [
        "role 'author' holds 'doc.edit' where (target.owner_id == subject.id)",
        "(target.owner_id == subject.id): true (target.owner_id = 2, subject.id = 2)",
    ]
    guest = rule_node(explain(authz, 3, "doc.edit", doc(authz, 1)), "roles:site")
    assert guest.outcome is False
    assert guest.children[0].reason == "role 'guest' does not hold 'doc.edit'"
    nobody = rule_node(explain(authz, 5, "doc.edit", doc(authz, 1)), "roles:site")
    assert nobody.children[0].reason == "'nobody' is no role of site"


def test_static_roles_on_membership_rows(authz: Authorizer) -> None:
    e = explain(authz, 1, "doc.delete", doc(authz, 1))  # admin of org 1
    assert e.allowed
    assert matched(e)[2:] == [
        "one of these holds",
        "subject.memberships: 1 related, one matches",
        "Membership #1, 1: all of these hold",
        "(it.org_id == target.org_id): true (it.org_id = 1, target.org_id = 1)",
    ]
    membership = e.matched()[4]
    assert [c.reason for c in membership.children][1] == "role 'admin' holds 'doc.delete'"
    # a member may delete drafts only: document 2's status is NULL, so UNKNOWN, and denied
    denied = explain(authz, 2, "doc.delete", doc(authz, 2))
    assert not denied.allowed
    assert "role 'member' holds 'doc.delete' where (target.status == 'draft')" in reasons(denied)
    assert (
        "(target.status == 'draft'): UNKNOWN (a NULL was compared) "
        "(target.status = None, 'draft' = 'draft')" in reasons(denied)
    )


def test_a_relationship_from_the_subject(authz: Authorizer) -> None:
    e = explain(authz, 7, "doc.read", doc(authz, 3))
    assert matched(e)[-2:] == [
        "subject.memberships: 1 related, one matches",
        "Membership #7, 3: (it.org_id == target.org_id): true (it.org_id = 3, target.org_id = 3)",
    ]


def test_comparisons_with_null_are_unknown(authz: Authorizer) -> None:
    e = explain(authz, 6, "doc.read", doc(authz, 2))  # level NULL on both sides
    assert not e.allowed
    assert e.outcome is False  # UNKNOWN at the top denies
    readers = rule_node(e, "readers")
    assert readers.outcome is None
    assert readers.children[0].reason == "none holds (some UNKNOWN)"
    comparison = readers.children[0].children[0]
    assert comparison.outcome is None
    assert comparison.reason == (
        "(target.level <= subject.level): UNKNOWN (a NULL was compared) "
        "(target.level = None, subject.level = None)"
    )
    assert "? (target.level <= subject.level): UNKNOWN" in str(e)
    # NOT UNKNOWN is UNKNOWN
    negated = explain(authz, 7, "doc.delete", doc(authz, 2))
    nots = [n for n in _walk(negated) if n.kind == "Not"]
    assert [n.outcome for n in nots] == [None]


def _walk(e: Explanation) -> Iterator[Explanation]:
    yield e
    for c in e.children:
        yield from _walk(c)


# -- deferral, trees, SQL-only and Python-only rules ----------------------------------------


def test_deferral_names_the_related_object(authz: Authorizer) -> None:
    comment = authz.session.get(Comment, 1)
    e = authz.explain(authz.session.get(User, 3), "comment.read", comment)
    assert e.allowed
    assert matched(e)[2:4] == [
        "target.document: allowed on a related object",
        "deferred to Document #1 via target.document",
    ]
    assert matched(e)[1] == "rule \"defer(target.document, 'doc.read')\" on Comment"
    nothing = authz.explain(
        authz.session.get(User, 3), "comment.read", authz.session.get(Comment, 3)
    )
    assert not nothing.allowed
    assert "target.document: denied on all 0 related" in reasons(nothing)


def test_deferral_to_a_tree_walks_the_ancestors(authz: Authorizer) -> None:
    e = explain(authz, 1, "doc.manage", doc(authz, 2))  # in folder 3 < 2 < 1 (1's)
    assert e.allowed
    assert "deferred to Folder #3 via target.folder" in reasons(e)
    walk = next(n for n in _walk(e) if n.kind == "Ancestors")
    assert walk.reason == "on Folder #1, an ancestor or the object itself"
    assert [c.reason.split(":")[0] for c in walk.children] == [
        "Folder #3",
        "Folder #2",
        "Folder #1",
    ]
    assert [c.outcome for c in walk.children] == [False, None, True]


def test_a_tree_denial_lists_every_folder_up_the_chain(authz: Authorizer) -> None:
    e = explain(authz, 2, "folder.view", authz.session.get(Folder, 3))
    assert not e.allowed
    walk = rule_node(e, "tree").children[0]
    assert walk.reason == "on none of 3 objects up the parent chain"
    # a cycle (4 <-> 5) is walked once; 8's grant on folder 4 allows folder 5
    cycle = explain(authz, 8, "folder.view", authz.session.get(Folder, 5))
    walk = rule_node(cycle, "tree").children[0]
    assert walk.reason == "on Folder #4, an ancestor or the object itself"
    assert matched(cycle)[-1] == "direct → permission folder.view in Folder 4"


def test_a_sql_only_rule_has_no_in_process_path(authz: Authorizer) -> None:
    e = explain(authz, 2, "doc.archive", doc(authz, 5))  # done, owned by 2
    assert e.allowed
    assert matched(e)[-1] == (
        "SQL-only rule archivable (no in-process path, asked the database): matches"
    )
    no = explain(authz, 1, "doc.archive", doc(authz, 5))
    assert not no.allowed
    assert reasons(no)[-1] == (
        "SQL-only rule archivable (no in-process path, asked the database): does not match"
    )
    unsaved = authz.explain(authz.session.get(User, 2), "doc.archive", Document(id=99))
    assert unsaved.children[0].children[0].outcome is None
    assert unsaved.children[0].children[0].reason == "SQL-only rule archivable: no in-process path"


def test_a_python_only_rule(authz: Authorizer) -> None:
    e = explain(authz, 2, "doc.flag", doc(authz, 3))
    assert matched(e)[-1] == "Python function flag returned True"


# -- denials ------------------------------------------------------------------------------------


def test_a_denial_lists_every_branch_tried(authz: Authorizer) -> None:
    e = explain(authz, 6, "doc.edit", doc(authz, 3))
    assert not e.allowed
    assert e.reason == "User #6 may not 'doc.edit' on Document #3: 2 rule(s) tried, none matched"
    assert [c.rule for c in e.children] == ["roles:site", "editors"]
    assert all(c.outcome is not True for c in _walk(e) if c.kind != "Not")
    branches = rule_node(e, "editors").children[0].children
    assert [b.kind for b in branches] == ["Related", "HasGrant", "Related"]
    assert [b.reason for b in branches] == [
        "target.owner: 0 related, none matches",
        "no grant of doc.edit globally or in Document 3 among the subject's 0 effective grants",
        "subject.memberships: 0 related, none matches",
    ]
    assert e.matched() == []


def test_no_rule_at_all(authz: Authorizer) -> None:
    e = authz.explain(authz.session.get(User, 1), "seat.use", doc(authz, 1))
    assert not e.allowed
    assert e.children == []
    assert e.reason == "User #1 may not 'seat.use' on Document #1: no rule grants it"


def test_explanations_agree_with_check(authz: Authorizer) -> None:
    session = authz.session
    users = session.scalars(sa.select(User).options(selectinload(User.memberships))).all()
    for cls, permissions in [
        (Document, ("doc.read", "doc.edit", "doc.delete", "doc.manage", "doc.archive", "doc.flag")),
        (Comment, ("comment.read",)),
        (Folder, ("folder.view",)),
        (Seat, ("seat.use",)),
    ]:
        for obj in session.scalars(sa.select(cls)).all():
            for permission in permissions:
                for user in users:
                    expected = authz.check(user, permission, obj)
                    assert authz.explain(user, permission, obj).allowed == expected


# -- rendering ----------------------------------------------------------------------------------


def test_str_renders_a_tree_and_to_dict_is_json(authz: Authorizer) -> None:
    e = explain(authz, 3, "doc.read", doc(authz, 3))
    text = str(e)
    lines = text.splitlines()
    assert (
        lines[0] == "✓ User #3 may 'doc.read' on Document #3: allowed by rule 'readers' on Document"
    )
    assert lines[1] == "    ? rule 'roles:site' on Document"
    assert "            ✓ group staff → permission doc.read in org 3" in lines
    assert (
        "            ✗ (target.level <= subject.level): false (target.level = 3, subject.level = 1)"
        in lines
    )
    data = e.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["outcome"] is True
    assert data["kind"] == "decision"
    assert [c["rule"] for c in data["children"]] == ["roles:site", "readers"]
    assert data["children"][0]["outcome"] is None  # UNKNOWN is null in JSON
    deep = data["children"][1]["children"][0]["children"][2]
    assert deep == {
        "kind": "HasGrant",
        "rule": "holds('doc.read' in org target.org_id)",
        "outcome": True,
        "reason": "group staff → permission doc.read in org 3",
        "children": [],
    }


def test_authorize_attaches_the_explanation(authz: Authorizer) -> None:
    user, document = authz.session.get(User, 6), doc(authz, 3)
    with pytest.raises(NotAuthorized) as raised:
        authz.authorize(user, "doc.edit", document)
    explanation = raised.value.explanation
    assert isinstance(explanation, Explanation)
    assert explanation.reason == (
        "User #6 may not 'doc.edit' on Document #3: 2 rule(s) tried, none matched"
    )
    assert str(explanation) == str(authz.explain(user, "doc.edit", document))
    authz.authorize(authz.session.get(User, 1), "doc.edit", document)  # allowed: no error


# -- explain_filter -------------------------------------------------------------------------------


def test_explain_filter_gives_sql_parameters_and_branches(authz: Authorizer) -> None:
    user = authz.session.get(User, 2)
    fe = authz.explain_filter(user, "doc.edit", Document)
    assert isinstance(fe, FilterExplanation)
    # the stored grants' scopes (a CTE of the subject's paths) come first, then the query
    assert fe.sql.startswith("WITH")
    assert "\n SELECT documents.id" in fe.sql
    assert "FROM documents" in fe.sql
    stmt = authz.filter(user, "doc.edit", Document)
    compiled = stmt.compile(authz.session.get_bind())
    assert fe.sql == str(compiled)
    assert fe.params == compiled.params
    assert 2 in fe.params.values()  # the subject's id, bound
    assert "doc.edit" in fe.params.values()  # the stored permission's token
    assert [b.rule for b in fe.branches] == ["roles:site", "editors"]
    assert all(isinstance(b, FilterBranch) and b.rows is None for b in fe.branches)
    assert fe.branches[0].sql.startswith("documents.owner_id = ")  # an author: their own
    assert "bastion_users_permissions" in fe.branches[1].sql
    assert fe.database_plan is None
    text = str(fe)
    assert text.startswith(fe.sql)
    assert "-- rule 'roles:site': documents.owner_id = " in text


def _rows_per_rule(authz: Authorizer, user: Any, permission: str) -> dict[str, int]:
    """Each registered rule's count, from the explanations (the Python path)."""
    counts: dict[str, int] = {}
    for d in authz.session.scalars(sa.select(Document)).all():
        for child in authz.explain(user, permission, d).children:
            counts[child.rule] = counts.get(child.rule, 0) + (child.outcome is True)
    return counts


@pytest.mark.parametrize(
    ("user", "permission"),
    [(1, "doc.read"), (2, "doc.edit"), (3, "doc.read"), (5, "doc.delete"), (8, "doc.manage")],
)
def test_explain_filter_counts_rows_per_rule(authz: Authorizer, user: int, permission: str) -> None:
    subject = authz.session.get(User, user)
    fe = authz.explain_filter(subject, permission, Document, counts=True)
    counts = {b.rule: b.rows for b in fe.branches}
    assert counts == _rows_per_rule(authz, subject, permission)
    total = len(authz.session.scalars(authz.filter(subject, permission, Document)).all())
    assert max(counts.values()) <= total <= sum(c or 0 for c in counts.values())
    assert "rows)" in str(fe)


def test_explain_filter_counts_a_sql_only_rule(authz: Authorizer) -> None:
    fe = authz.explain_filter(authz.session.get(User, 2), "doc.archive", Document, counts=True)
    assert [(b.rule, b.rows) for b in fe.branches] == [("archivable", 1)]
    assert "IN (SELECT" in fe.branches[0].sql


def test_explain_filter_shows_the_database_plan(authz: Authorizer, backend: str) -> None:
    fe = authz.explain_filter(
        authz.session.get(User, 3), "doc.read", sa.select(Document.id), database_plan=True
    )
    assert fe.database_plan
    if backend == "sqlite":  # EXPLAIN QUERY PLAN
        assert "documents" in fe.database_plan
        assert "SCAN" in fe.database_plan or "SEARCH" in fe.database_plan
    else:  # EXPLAIN
        assert "Scan" in fe.database_plan
    assert fe.database_plan in str(fe)
    assert "-- plan:" in str(fe)


def test_explain_filter_refuses_a_python_only_rule(authz: Authorizer) -> None:
    with pytest.raises(RuleNotTranslatable):
        authz.explain_filter(authz.session.get(User, 1), "doc.flag", Document)


def test_explain_filter_on_a_fresh_policy(authz: Authorizer) -> None:
    policy = Policy(["doc.read"])
    policy.allow("doc.read", subject=User, target=Document, when=target.is_public, name="public")
    fe = Authorizer(policy, authz.session).explain_filter(
        authz.session.get(User, 1), "doc.read", Document, counts=True
    )
    assert [(b.rule, b.rows) for b in fe.branches] == [("public", 2)]
    assert fe.sql.endswith(f"WHERE {fe.branches[0].sql}")


def test_explain_filter_describes_the_entity_it_is_given(authz: Authorizer) -> None:
    """``entity=`` was taken as a context value: the filter narrowed that entity while the
    branches and counts described the statement's first one (or none, without rules)."""
    user = authz.session.get(User, 2)
    query = sa.select(Folder.id, Document.id).join(Document, Document.folder_id == Folder.id)
    fe = authz.explain_filter(user, "doc.edit", query, entity=Document, counts=True)
    stmt = authz.filter(user, "doc.edit", query, entity=Document)
    assert fe.sql == str(stmt.compile(authz.session.get_bind()))
    assert [b.rule for b in fe.branches] == ["roles:site", "editors"]
    assert all("documents" in b.sql for b in fe.branches)
    assert all(b.rows is not None for b in fe.branches)
