"""Hypothesis strategies for the ``_pages_world`` scenario: random rows and grants.

Small worlds (up to 3 users, 5 documents, 3 folders) over small value ranges, so that values
collide (equal levels, shared orgs, grants in the scope of an existing object) and NULLs are
frequent; folder parents may form cycles.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from _pages_world import BUNDLES, GROUPS, TOKENS, Data, Grant

#: examples per property test and database (fewer under the ``dev`` profile)
EXAMPLES = 200 if settings.default.max_examples >= 100 else settings.default.max_examples

_ORGS = st.one_of(st.none(), st.integers(1, 3))
_LEVELS = st.one_of(st.none(), st.integers(0, 3))


@st.composite
def scenarios(draw: Any) -> Data:
    """A random :class:`Data` (users, memberships, folders, documents, comments, seats, grants)."""
    n_users = draw(st.integers(1, 3))
    users = [
        {
            "id": n,
            "level": draw(_LEVELS),
            "role": draw(st.sampled_from([None, "editor", "author", "guest", "nobody"])),
            "is_staff": draw(st.one_of(st.none(), st.booleans())),
        }
        for n in range(1, n_users + 1)
    ]
    memberships = [
        {"user_id": u, "org_id": o, "role": draw(st.sampled_from([None, "admin", "member", "x"]))}
        for u in range(1, n_users + 1)
        for o in sorted(draw(st.sets(st.integers(1, 3), max_size=2)))
    ]
    n_folders = draw(st.integers(0, 3))
    folders = [
        {
            "id": n,
            "parent_id": draw(st.one_of(st.none(), st.integers(1, n_folders))),
            "owner_id": draw(st.one_of(st.none(), st.integers(1, n_users))),
        }
        for n in range(1, n_folders + 1)
    ]
    folder_ids = st.one_of(st.none(), st.integers(1, n_folders)) if n_folders else st.none()
    n_docs = draw(st.integers(0, 5))
    documents = [
        {
            "id": n,
            "org_id": draw(_ORGS),
            "owner_id": draw(st.one_of(st.none(), st.integers(1, n_users))),
            "folder_id": draw(folder_ids),
            "level": draw(_LEVELS),
            "status": draw(st.sampled_from([None, "draft", "done", "published"])),
            "is_public": draw(st.one_of(st.none(), st.booleans())),
        }
        for n in range(1, n_docs + 1)
    ]
    doc_ids = st.one_of(st.none(), st.integers(1, n_docs)) if n_docs else st.none()
    comments = [{"id": n, "document_id": draw(doc_ids)} for n in range(1, draw(st.integers(0, 3)))]
    seats = [
        {"org_id": o, "number": k, "holder_id": draw(st.one_of(st.none(), st.integers(1, 4)))}
        for o, k in sorted(draw(st.sets(st.tuples(st.integers(1, 3), st.integers(1, 2)))))
    ]
    scopes: list[Any] = [None, ("org", 1), ("org", 2), ("org", 3)]
    scopes += [("doc", n) for n in range(1, n_docs + 1)]
    scopes += [("folder", n) for n in range(1, n_folders + 1)]
    grants = draw(st.lists(_grant(n_users, scopes), max_size=5))
    # one edge per (holder, what, scope): the store updates the window of a repeated grant
    unique = {(g.holder, g.permission, g.bundle, g.group, g.scope): g for g in grants}
    return Data(users, memberships, folders, documents, comments, seats, list(unique.values()))


@st.composite
def _grant(draw: Any, n_users: int, scopes: list[Any]) -> Grant:
    holder = draw(st.one_of(st.integers(1, n_users), st.sampled_from(GROUPS)))
    kinds = ["permission", "bundle"] + (["group"] if isinstance(holder, int) else [])
    kind = draw(st.sampled_from(kinds))
    what = {
        "permission": st.sampled_from(TOKENS),
        "bundle": st.sampled_from(sorted(BUNDLES)),
        "group": st.sampled_from(GROUPS),
    }[kind]
    return Grant(
        holder,
        scope=draw(st.sampled_from(scopes)),
        window=draw(st.sampled_from([None, None, None, "past", "future"])),
        **{kind: draw(what)},
    )
