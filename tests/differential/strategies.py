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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st

from bastion.roles import Permission, Role, RoleGrant, RolePolicy
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
    SqlRule,
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

#: The discriminator values of the single-table inheritance hierarchies (see ``schema``).
USER_KINDS = ("user", "admin")
DOCUMENT_KINDS = ("document", "invoice", "receipt")

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
            "kind": draw(st.sampled_from(USER_KINDS)),
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
            "kind": draw(st.sampled_from(DOCUMENT_KINDS)),
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
#: ``User`` properties holding collections of strings (role names; see ``schema.User``).
SUBJECT_NAME_COLLECTIONS = ("role_names", "name_or_none")

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
    source = draw(st.sampled_from(["literal", "context", "subject"]))
    values: Operand
    if source == "literal":
        values = Literal(tuple(draw(st.lists(maybe(VALUES[kind]), max_size=3))))
    elif source == "context":
        values = Context(CONTEXT_LISTS[kind])
    else:
        collections = SUBJECT_COLLECTIONS if kind is int else SUBJECT_NAME_COLLECTIONS
        values = Attr("subject", draw(st.sampled_from(collections)))
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
def leaves(
    scopes: Scopes, *, with_patterns: bool = True, with_sql: bool = False
) -> st.SearchStrategy[Rule]:
    kinds = [
        compares(scopes),
        ins(scopes),
        is_nulls(scopes),
        st.sampled_from([ALLOW, DENY, UNKNOWN]),
        sames(scopes),
        role_grants(scopes),
    ]
    if with_patterns and scopes.target == "documents":
        kinds.append(patterns(scopes))
        kinds.append(role_patterns(scopes))
    if with_sql and scopes.target == "documents":
        kinds.append(sql_rules())
    return st.one_of(*kinds)


# ---------------------------------------------------------------------------------------------
# static roles (RoleGrant)

#: Role names are drawn from the string domain, so role columns and context values name roles
#: often; a role policy declares some of them (an undeclared name grants nothing).
ROLE_NAMES = ("a", "b", "c")
#: The permission role grants are asked about, and one no rule asks about.
ROLE_PERMISSIONS = ("p", "q")


@cache
@st.composite
def role_policies(draw: st.DrawFn, scopes: Scopes) -> RolePolicy:
    """1-3 roles; each holds ``p`` outright, where a rule holds (a rule over the grant's own
    target and subject), or not at all, and maybe ``q``. Some role holds ``p``."""
    names = draw(st.lists(st.sampled_from(ROLE_NAMES), min_size=1, max_size=3, unique=True))
    conditions = rules(Scopes(target=scopes.target), 1, with_patterns=False)
    roles = []
    for index, name in enumerate(names):
        # outright most often: a policy without conditional roles takes the compilers' fast path
        how = draw(st.sampled_from(["outright", "outright", "when", "none"]))
        if index == 0 and how == "none":  # grants() needs a role that holds p
            how = "outright"
        held: list[Permission] = []
        if how == "outright":
            held.append(Permission("p"))
        elif how == "when":
            held.append(Permission("p", when=draw(conditions)))
        if draw(st.booleans()):
            held.append(Permission("q"))
        roles.append(Role(name, held))
    return RolePolicy(roles, name=f"roles_{''.join(names)}")


#: String columns a role name can be read from, per table (the role of a membership row ...).
ROLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "memberships": ("role",),
    "documents": ("status",),
    "users": ("name",),
    "orgs": ("plan",),
    "tags": ("name",),
}


@cache
@st.composite
def role_grants(draw: st.DrawFn, scopes: Scopes) -> Rule:
    """ "The role read from X grants p": X a subject column, a context value, a column of the
    target or of a related row (``it.role`` of a membership), or (``many=True``) a collection of
    role names from the subject or the context (NULLs, and NULL collections, included)."""
    roles = draw(role_policies(scopes))
    choices: list[tuple[Operand, bool]] = [
        (Attr("subject", "name"), False),
        (Context("word"), False),
        (Attr("subject", "role_names"), True),
        (Attr("subject", "role_names"), True),
        (Attr("subject", "name_or_none"), True),
        (Context("words"), True),
        (Context("words"), True),
    ]
    for scope in ("target", "it"):
        table = scopes.table(scope)
        if table is not None:
            choices += [(Attr(scope, c), False) for c in ROLE_COLUMNS[table]]
    role, many = draw(st.sampled_from(choices))
    return RoleGrant(roles, "p", role, many)


@cache
@st.composite
def role_patterns(draw: st.DrawFn, scopes: Scopes) -> Rule:
    """The usual shapes of per-organisation roles: the role of the subject's membership in the
    document's org, from the subject's side or from the org's."""
    inner = Scopes(it="memberships", target=scopes.target)
    grant = RoleGrant(draw(role_policies(inner)), "p", Attr("it", "role"), False)
    same_org = Compare(Attr("it", "org_id"), "==", Attr("target", "org_id"))
    options: list[Rule] = [
        Related("subject", "memberships", And((same_org, grant))),
        Related(
            "target",
            "org",
            Related("it", "memberships", And((Related("it", "user", Same("it")), grant))),
        ),
    ]
    return draw(st.sampled_from(options))


# ---------------------------------------------------------------------------------------------
# SQL-only rules (SqlRule / Policy.sql_rule)


@dataclass(frozen=True)
class SqlFunction:
    """A shield-style SQL-only rule: ``build(query, bearer, target)`` narrows a ``Select`` of
    the document's key; ``oracle(data, user, document)`` is the same condition in Python,
    written by hand (TRUE only where the SQL ``WHERE`` is TRUE)."""

    name: str
    build: Callable[[Any, Any, Any], Any]
    oracle: Callable[[Mapping[str, Sequence[dict[str, Any]]], dict[str, Any], dict[str, Any]], bool]

    def __call__(self, query: Any, *, bearer: Any, target: Any, permission: Any) -> Any:
        return self.build(query, bearer, target)

    def node(self) -> SqlRule:
        return SqlRule(self, self.name, "p")


def _gt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a > b


def _member_role(query: Any, bearer: Any, target: Any) -> Any:
    from .schema import Membership

    return query.join(Membership, Membership.org_id == target.org_id).where(
        Membership.user_id == bearer.id, Membership.role.in_(["a", "b"])
    )


def _tag_named_like_status(query: Any, bearer: Any, target: Any) -> Any:
    from .schema import Tag, document_tags

    return (
        query.join(document_tags, document_tags.c.document_id == target.id)
        .join(Tag, Tag.id == document_tags.c.tag_id)
        .where(Tag.name == target.status)
    )


def _public_child(query: Any, bearer: Any, target: Any) -> Any:
    from sqlalchemy.orm import aliased

    from .schema import Document

    child = aliased(Document)
    return query.join(child, child.parent_id == target.id).where(child.is_public.is_(True))


def _rows(data: Mapping[str, Sequence[dict[str, Any]]], table: str) -> Sequence[dict[str, Any]]:
    return data[table]


SQL_FUNCTIONS: tuple[SqlFunction, ...] = (
    SqlFunction(
        "level_at_least_2",
        lambda q, b, t: q.where(t.level >= 2),
        lambda data, u, d: _gt(d["level"], 1),
    ),
    SqlFunction(
        "owned_by_bearer",
        lambda q, b, t: q.where(t.owner_id == b.id),
        lambda data, u, d: d["owner_id"] == u["id"],
    ),
    SqlFunction(  # a NULL bearer level is bound as NULL: nothing
        "outranked_by_bearer",
        lambda q, b, t: q.where(t.level < sa.literal(b.level, sa.Integer)),
        lambda data, u, d: _gt(u["level"], d["level"]),
    ),
    SqlFunction(  # NOT NULL is NULL: only FALSE is kept
        "not_public",
        lambda q, b, t: q.where(sa.not_(t.is_public)),
        lambda data, u, d: d["is_public"] is False,
    ),
    SqlFunction(
        "public_or_own",
        lambda q, b, t: q.where(sa.or_(t.is_public.is_(True), t.owner_id == b.id)),
        lambda data, u, d: d["is_public"] is True or d["owner_id"] == u["id"],
    ),
    SqlFunction(  # joins a table the caller's statement may also name
        "member_of_org_as_a_or_b",
        _member_role,
        lambda data, u, d: any(
            m["org_id"] == d["org_id"] and m["user_id"] == u["id"] and m["role"] in ("a", "b")
            for m in _rows(data, "memberships")
        ),
    ),
    SqlFunction(  # many-to-many, several rows per document (IN removes duplicates)
        "tag_named_like_status",
        _tag_named_like_status,
        lambda data, u, d: (
            d["status"] is not None
            and any(
                link["document_id"] == d["id"]
                and tag["id"] == link["tag_id"]
                and tag["name"] == d["status"]
                for link in _rows(data, "document_tags")
                for tag in _rows(data, "tags")
            )
        ),
    ),
    SqlFunction(  # the same table under an alias
        "has_public_child",
        _public_child,
        lambda data, u, d: any(
            c["parent_id"] == d["id"] and c["is_public"] is True for c in _rows(data, "documents")
        ),
    ),
)


def sql_rules() -> st.SearchStrategy[Rule]:
    return st.sampled_from([f.node() for f in SQL_FUNCTIONS])


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
def relateds(
    draw: st.DrawFn, scopes: Scopes, depth: int, with_patterns: bool, with_sql: bool = False
) -> Rule:
    starts: list[Scope] = ["target", "subject"]
    if scopes.it and RELATIONSHIPS[scopes.it]:
        starts.append("it")
    scope = draw(st.sampled_from(starts))
    table = scopes.table(scope)
    assert table is not None
    name = draw(st.sampled_from(sorted(RELATIONSHIPS[table])))
    inner = Scopes(it=RELATIONSHIPS[table][name], target=scopes.target)
    sub = rules(inner, depth - 1, with_patterns=with_patterns, with_sql=with_sql)
    return Related(scope, name, draw(sub))


@cache
@st.composite
def reroots(
    draw: st.DrawFn, scopes: Scopes, depth: int, with_patterns: bool, with_sql: bool = False
) -> Rule:
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
    sub = rules(inner, depth - 1, with_patterns=with_patterns, with_sql=with_sql)
    return Reroot(scope, name, draw(sub))


@cache  # building strategies costs more than drawing from them
@st.composite
def rules(
    draw: st.DrawFn,
    scopes: Scopes = Scopes(),
    depth: int = 4,
    *,
    with_patterns: bool = True,
    with_sql: bool = False,
) -> Rule:
    """A rule tree of depth at most ``depth`` (leaves are more likely than inner nodes).

    ``with_sql`` adds SQL-only rules (:data:`SQL_FUNCTIONS`) as leaves wherever the target is a
    document: such a tree has no complete Python path."""
    flags = {"with_patterns": with_patterns, "with_sql": with_sql}
    if depth <= 0:
        return draw(leaves(scopes, **flags))
    # "not" is often a negated junction: where NULLs make NOT (a OR b) differ from naive logic
    kinds = ["leaf", "leaf", "and", "or", "not", "not", "related", "reroot"]
    if scopes.target == "documents":
        kinds.append("ancestors")
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(leaves(scopes, **flags))
    sub = rules(scopes, depth - 1, **flags)
    if kind == "not":
        if depth >= 2 and draw(st.booleans()):
            inner = rules(scopes, depth - 2, **flags)
            items = tuple(draw(st.lists(inner, min_size=2, max_size=3)))
            return Not(draw(st.sampled_from([Or(items), And(items)])))
        return Not(draw(sub))
    if kind == "related":
        return draw(relateds(scopes, depth, with_patterns, with_sql))
    if kind == "reroot":
        return draw(reroots(scopes, depth, with_patterns, with_sql))
    if kind == "ancestors":
        # inside, ``target`` is the ancestor (a document) and ``it`` starts afresh
        tree = rules(Scopes(target="documents"), depth - 1, **flags)
        return Ancestors("parent", draw(tree))
    items = tuple(draw(st.lists(sub, min_size=2, max_size=3)))
    return And(items) if kind == "and" else Or(items)


# ---------------------------------------------------------------------------------------------
# policies: several registrations along the class hierarchies

#: Class names as the generator sees them (the test maps them to ``schema`` classes), each with
#: its bases, nearest first.
SUBJECT_CLASSES: dict[str, tuple[str, ...]] = {"User": ("User",), "Admin": ("Admin", "User")}
TARGET_CLASSES: dict[str, tuple[str, ...]] = {
    "Document": ("Document",),
    "Invoice": ("Invoice", "Document"),
    "Receipt": ("Receipt", "Invoice", "Document"),
}
#: discriminator value -> class name
CLASS_OF_KIND = {
    "user": "User",
    "admin": "Admin",
    "document": "Document",
    "invoice": "Invoice",
    "receipt": "Receipt",
}


@dataclass(frozen=True)
class Registration:
    """One registration of permission ``p`` for (``subject``, ``target``) class names.

    ``how``: ``"allow"`` (``policy.allow(when=rule)``), ``"sql_rule"`` (``policy.sql_rule``
    with ``function``) or ``"roles"`` (``roles.register(role=subject.<role_from>)``, many=True
    for a collection)."""

    how: str
    subject: str
    target: str
    rule: Rule | None = None
    function: SqlFunction | None = None
    roles: RolePolicy | None = None
    role_from: str = "name"
    many: bool = False

    def node(self) -> Rule:
        """The rule this registration adds, as a node (for the oracle)."""
        if self.how == "sql_rule":
            assert self.function is not None
            return self.function.node()
        if self.how == "roles":
            assert self.roles is not None
            return RoleGrant(self.roles, "p", Attr("subject", self.role_from), self.many)
        assert self.rule is not None
        return self.rule


@st.composite
def registrations(draw: st.DrawFn) -> Registration:
    how = draw(st.sampled_from(["allow", "allow", "sql_rule", "sql_rule", "roles"]))
    subject = draw(st.sampled_from(sorted(SUBJECT_CLASSES)))
    target = draw(st.sampled_from(sorted(TARGET_CLASSES)))
    if how == "sql_rule":
        return Registration(how, subject, target, function=draw(st.sampled_from(SQL_FUNCTIONS)))
    if how == "roles":
        role_from, many = draw(
            st.sampled_from([("name", False), ("role_names", True), ("name_or_none", True)])
        )
        roles = draw(role_policies(Scopes()))
        return Registration(how, subject, target, roles=roles, role_from=role_from, many=many)
    rule = draw(rules(Scopes(), 3, with_sql=True))
    return Registration(how, subject, target, rule=rule)


def policies() -> st.SearchStrategy[list[Registration]]:
    """1-4 registrations of ``p`` on random (subject class, target class) pairs."""
    return st.lists(registrations(), min_size=1, max_size=4)
