"""Hypothesis strategies: small data sets full of NULLs, and random rule trees over them.

Value domains are tiny (a few ints, three one-letter strings, booleans) so that equalities between
columns, subject attributes, context values and literals hold often. Strings are lowercase
ASCII letters only, whose order is the same in Python, SQLite and any PostgreSQL collation.

Rules are built from the node classes of :mod:`bastion.rules.nodes` and cover every node kind and
operand kind; operands of a comparison always have the same type (PostgreSQL refuses
``integer = varchar``), and ordering comparisons never take a literal ``None`` (registration
refuses those, correctly: they are always UNKNOWN).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import strategies as st

from bastion.rules.nodes import (
    ALLOW,
    DENY,
    UNKNOWN,
    Ancestors,
    And,
    Attr,
    Compare,
    Context,
    In,
    IsNull,
    Literal,
    Not,
    Operand,
    Or,
    Related,
    Reroot,
    Rule,
    Same,
    Scope,
)

# ---------------------------------------------------------------------------------------------
# value domains

INTS = st.integers(min_value=0, max_value=4)
STRS = st.sampled_from(["a", "b", "c"])
BOOLS = st.booleans()
VALUES: dict[type, st.SearchStrategy[Any]] = {int: INTS, str: STRS, bool: BOOLS}


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``values`` or NULL, about half of the time each."""
    return st.one_of(st.none(), values)


# ---------------------------------------------------------------------------------------------
# data

#: The tables in the order the rows must be inserted (foreign keys).
TABLE_ORDER = ("users", "orgs", "tags", "memberships", "documents", "document_tags")


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    """3-4 users, 0-3 orgs, 0-3 tags, some memberships and tag links, 3-5 documents."""
    user_ids = list(range(1, draw(st.integers(3, 4)) + 1))
    org_ids = list(range(1, draw(st.integers(0, 3)) + 1))
    tag_ids = list(range(1, draw(st.integers(0, 3)) + 1))
    doc_ids = list(range(1, draw(st.integers(3, 5)) + 1))
    small = st.integers(0, 3)
    users = [
        {
            "id": i,
            "name": draw(maybe(STRS)),
            "level": draw(maybe(small)),
            "is_admin": draw(maybe(BOOLS)),
        }
        for i in user_ids
    ]
    orgs = [{"id": i, "plan": draw(maybe(STRS)), "tier": draw(maybe(small))} for i in org_ids]
    tags = [{"id": i, "name": draw(maybe(STRS))} for i in tag_ids]
    memberships = [
        {"user_id": u, "org_id": o, "role": draw(maybe(STRS))}
        for u in user_ids
        for o in org_ids
        if draw(st.booleans())
    ]
    documents = [
        {
            "id": i,
            "owner_id": draw(maybe(st.sampled_from(user_ids))),
            "org_id": draw(maybe(st.sampled_from(org_ids))) if org_ids else None,
            "is_public": draw(maybe(BOOLS)),
            "status": draw(maybe(STRS)),
            "level": draw(maybe(small)),
            "parent_id": draw(maybe(st.sampled_from(doc_ids))),  # cycles included
        }
        for i in doc_ids
    ]
    document_tags = [
        {"document_id": d, "tag_id": t} for d in doc_ids for t in tag_ids if draw(st.booleans())
    ]
    return {
        "users": users,
        "orgs": orgs,
        "tags": tags,
        "memberships": memberships,
        "documents": documents,
        "document_tags": document_tags,
    }


#: Context values passed to every call: a scalar of each type, and two lists.
CONTEXT_SCALARS: dict[type, str] = {int: "lvl", str: "word", bool: "flag"}
CONTEXT_LISTS: dict[type, str] = {int: "lvls", str: "words"}


def contexts() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "lvl": maybe(INTS),
            "word": maybe(STRS),
            "flag": maybe(BOOLS),
            "lvls": maybe(st.lists(maybe(INTS), max_size=3)),
            "words": st.lists(maybe(STRS), max_size=3),
        }
    )


# ---------------------------------------------------------------------------------------------
# the schema, as the rule generator sees it

COLUMNS: dict[str, dict[str, type]] = {
    "users": {"id": int, "name": str, "level": int, "is_admin": bool},
    "orgs": {"id": int, "plan": str, "tier": int},
    "memberships": {"user_id": int, "org_id": int, "role": str},
    "documents": {
        "id": int,
        "owner_id": int,
        "org_id": int,
        "is_public": bool,
        "status": str,
        "level": int,
        "parent_id": int,
    },
    "tags": {"id": int, "name": str},
}

RELATIONSHIPS: dict[str, dict[str, str]] = {
    "users": {"memberships": "memberships", "documents": "documents"},
    "orgs": {"memberships": "memberships", "documents": "documents"},
    "memberships": {"user": "users", "org": "orgs"},
    "documents": {
        "owner": "users",
        "org": "orgs",
        "tags": "tags",
        "parent": "documents",
        "children": "documents",
    },
    "tags": {"documents": "documents"},
}

#: ``User`` properties holding collections of ints (see ``schema.User``).
SUBJECT_COLLECTIONS = ("org_ids", "near_levels", "levels_or_none")

TYPES: tuple[type, ...] = (int, str, bool)
OPERATORS = ("==", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Scopes:
    """The table of each scope: the target is a document, the subject a user, ``it`` varies."""

    it: str | None = None
    target: str = "documents"
    subject: str = "users"

    def table(self, scope: Scope) -> str | None:
        return {"it": self.it, "target": self.target, "subject": self.subject}[scope]


def _columns_of_type(scopes: Scopes, kind: type, which: tuple[Scope, ...]) -> list[Attr]:
    found: list[Attr] = []
    for scope in which:
        table = scopes.table(scope)
        if table is not None:
            found += [Attr(scope, c) for c, t in COLUMNS[table].items() if t is kind]
    return found


@cache
@st.composite
def operands(
    draw: st.DrawFn, scopes: Scopes, kind: type, *, none_ok: bool = True, column_first: bool = True
) -> Operand:
    """An operand of type ``kind``: a target/it column, a subject attribute, a context value or
    a literal (``None`` only if ``none_ok``)."""
    columns = _columns_of_type(scopes, kind, ("target", "it"))
    choices = ["column", "subject", "context", "literal"]
    if not column_first:
        choices = ["literal", "subject", "context", "column"]
    if not columns:  # e.g. no boolean column on a rerooted org
        choices.remove("column")
    which = draw(st.sampled_from(choices))
    if which == "column":
        return draw(st.sampled_from(columns))
    if which == "subject":
        return draw(st.sampled_from(_columns_of_type(scopes, kind, ("subject",))))
    if which == "context":
        return Context(CONTEXT_SCALARS[kind])
    return Literal(draw(maybe(VALUES[kind]) if none_ok else VALUES[kind]))


@cache
@st.composite
def compares(draw: st.DrawFn, scopes: Scopes) -> Rule:
    kind = draw(st.sampled_from(TYPES))
    op = draw(st.sampled_from(OPERATORS))
    none_ok = op in ("==", "!=")  # ordering with a literal None is refused at registration
    left = draw(operands(scopes, kind, none_ok=none_ok))
    right = draw(operands(scopes, kind, none_ok=none_ok, column_first=False))
    return Compare(left, op, right)


@cache
@st.composite
def ins(draw: st.DrawFn, scopes: Scopes) -> Rule:
    kind = draw(st.sampled_from((int, str)))
    left = draw(operands(scopes, kind))
    sources = ["literal", "context"] + (["subject"] if kind is int else [])
    source = draw(st.sampled_from(sources))
    values: Operand
    if source == "literal":
        values = Literal(tuple(draw(st.lists(maybe(VALUES[kind]), max_size=3))))
    elif source == "context":
        values = Context(CONTEXT_LISTS[kind])
    else:
        values = Attr("subject", draw(st.sampled_from(SUBJECT_COLLECTIONS)))
    return In(left, values)


@cache
@st.composite
def is_nulls(draw: st.DrawFn, scopes: Scopes) -> Rule:
    kind = draw(st.sampled_from(TYPES))
    operand = draw(st.one_of(operands(scopes, kind), st.just(Attr("subject", "levels_or_none"))))
    return IsNull(operand, negated=draw(st.booleans()))


@cache
def sames(scopes: Scopes) -> st.SearchStrategy[Rule]:
    # Same("it") is the interesting one; the others are constant (FALSE / TRUE) but legal.
    options: list[Rule] = [Same("target"), Same("subject")]
    if scopes.it is not None:
        options.insert(0, Same("it"))
    return st.sampled_from(options)


@cache
def leaves(scopes: Scopes, *, with_patterns: bool = True) -> st.SearchStrategy[Rule]:
    kinds = [
        compares(scopes),
        ins(scopes),
        is_nulls(scopes),
        st.sampled_from([ALLOW, DENY, UNKNOWN]),
        sames(scopes),
    ]
    if with_patterns and scopes.target == "documents":
        kinds.append(patterns(scopes))
    return st.one_of(*kinds)


@cache
def patterns(scopes: Scopes) -> st.SearchStrategy[Rule]:
    """Shapes the compilers treat specially, too unlikely to come up by chance."""
    member_of_org = Related(
        "target", "org", Related("it", "memberships", Related("it", "user", Same("it")))
    )
    options: list[Rule] = [
        Related("target", "owner", Same("it")),  # target.owner == subject
        Not(Related("target", "owner", Same("it"))),  # target.owner != subject
        member_of_org,
        Related(
            "subject", "memberships", Compare(Attr("it", "org_id"), "==", Attr("target", "org_id"))
        ),
        Related("subject", "documents", Compare(Attr("target", "id"), "==", Attr("it", "id"))),
        # deferral to the parent, and a permission inherited down a tree (cycles included)
        Reroot("target", "parent", Related("target", "owner", Same("it"))),
        Ancestors("parent", Related("target", "owner", Same("it"))),
        Ancestors("parent", Compare(Attr("target", "status"), "==", Context("word"))),
    ]
    simple = st.sampled_from(options)
    inner = Scopes(it="memberships", target=scopes.target)
    # subject.memberships.any((it.org_id == target.org_id) & <more>): the IN-subquery shape
    in_subquery = st.builds(
        lambda extra: Related(
            "subject",
            "memberships",
            And((Compare(Attr("it", "org_id"), "==", Attr("target", "org_id")), extra)),
        ),
        rules(inner, 1, with_patterns=False),
    )
    return st.one_of(simple, in_subquery)


@cache
@st.composite
def relateds(draw: st.DrawFn, scopes: Scopes, depth: int, with_patterns: bool) -> Rule:
    starts: list[Scope] = ["target", "subject"]
    if scopes.it and RELATIONSHIPS[scopes.it]:
        starts.append("it")
    scope = draw(st.sampled_from(starts))
    table = scopes.table(scope)
    assert table is not None
    name = draw(st.sampled_from(sorted(RELATIONSHIPS[table])))
    inner = Scopes(it=RELATIONSHIPS[table][name], target=scopes.target)
    return Related(scope, name, draw(rules(inner, depth - 1, with_patterns=with_patterns)))


@cache
@st.composite
def reroots(draw: st.DrawFn, scopes: Scopes, depth: int, with_patterns: bool) -> Rule:
    # Not from the subject: deferral starts from the target or a related object (a documented
    # registration error otherwise).
    starts: list[Scope] = ["target"]
    if scopes.it and RELATIONSHIPS[scopes.it]:
        starts.append("it")
    scope = draw(st.sampled_from(starts))
    table = scopes.table(scope)
    assert table is not None
    name = draw(st.sampled_from(sorted(RELATIONSHIPS[table])))
    inner = Scopes(target=RELATIONSHIPS[table][name])
    return Reroot(scope, name, draw(rules(inner, depth - 1, with_patterns=with_patterns)))


@cache  # building strategies costs more than drawing from them
@st.composite
def rules(
    draw: st.DrawFn,
    scopes: Scopes = Scopes(),
    depth: int = 4,
    *,
    with_patterns: bool = True,
) -> Rule:
    """A rule tree of depth at most ``depth`` (leaves are more likely than inner nodes)."""
    if depth <= 0:
        return draw(leaves(scopes, with_patterns=with_patterns))
    # "not" is often a negated junction: where NULLs make NOT (a OR b) differ from naive logic
    kinds = ["leaf", "leaf", "and", "or", "not", "not", "related", "reroot"]
    if scopes.target == "documents":
        kinds.append("ancestors")
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(leaves(scopes, with_patterns=with_patterns))
    sub = rules(scopes, depth - 1, with_patterns=with_patterns)
    if kind == "not":
        if depth >= 2 and draw(st.booleans()):
            inner = rules(scopes, depth - 2, with_patterns=with_patterns)
            items = tuple(draw(st.lists(inner, min_size=2, max_size=3)))
            return Not(draw(st.sampled_from([Or(items), And(items)])))
        return Not(draw(sub))
    if kind == "related":
        return draw(relateds(scopes, depth, with_patterns))
    if kind == "reroot":
        return draw(reroots(scopes, depth, with_patterns))
    if kind == "ancestors":
        # inside, ``target`` is the ancestor (a document) and ``it`` starts afresh
        tree = rules(Scopes(target="documents"), depth - 1, with_patterns=with_patterns)
        return Ancestors("parent", draw(tree))
    items = tuple(draw(st.lists(sub, min_size=2, max_size=3)))
    return And(items) if kind == "and" else Or(items)
