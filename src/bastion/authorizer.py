"""``Authorizer``: a policy applied through one SQLAlchemy ``Session``.

Life of a check
---------------
``check(user, "doc.read", doc)`` looks up the compiled :class:`~bastion.policy.Plan` for
``("doc.read", User, Document)`` (a dict hit after the first call) and runs its Python predicate on
the loaded objects. The predicate reads attributes from instance ``__dict__`` only; if one it needs
is not loaded, it raises ``NotLoaded`` and the check becomes **one** query for that primary key::

    SELECT EXISTS (SELECT 1 FROM documents WHERE documents.id = :pk AND <the compiled rule>)

so a check never triggers N lazy loads. Only ``True`` allows: FALSE and UNKNOWN deny.

Life of a filter
----------------
``filter(user, "doc.read", Document)`` (or a ``Select``) compiles the same plan with
:func:`bastion.rules.to_sql` for this subject and adds it to the statement's ``WHERE``. A rule
that is an OR of several branches (``public | owner | member of the org``) becomes one
``IN (... UNION ALL ...)`` over the primary key, so each branch can use its own index instead of a
full scan::

    WHERE documents.id IN (SELECT d.id FROM documents AS d WHERE d.is_public = true
                           UNION ALL SELECT d.id FROM documents AS d WHERE d.owner_id = :id
                           UNION ALL SELECT d.id FROM documents AS d WHERE d.org_id IN (...))

The caller's SELECT list, joins, ordering and limits are untouched; ``count()`` works on the result.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.exc import ObjectDeletedError
from sqlalchemy.sql import Select
from sqlalchemy.sql import util as sql_util
from sqlalchemy.sql.elements import BooleanClauseList, ColumnElement, Grouping, True_

from bastion.enforcement import INTERNAL, QUERY_SCOPE_KEY, mark_authorized
from bastion.errors import (
    InvalidArgument,
    MissingContext,
    NotAuthorized,
    RuleNotTranslatable,
    UnmappedClass,
)
from bastion.policy import ALL_PERMISSIONS, Plan, Policy
from bastion.rules.constructs import bitmap_friendly, key_in, per_dialect, subquery_free
from bastion.rules.explain import Explanation, describe, explain_rule, register_explainer
from bastion.rules.nodes import Or, SqlRule
from bastion.rules.reads import related_classes
from bastion.rules.to_python import (
    ANCESTORS_PREFETCHED,
    LAZY_LOADS_ALLOWED,
    SESSION_KEY,
    NotLoaded,
)
from bastion.rules.to_sql import ROW, SqlEnv, compile_sql, scoped_alias, sql_clause
from bastion.rules.validate import context_columns, mapper_of, value_mismatch

__all__ = ["Authorizer", "FilterBranch", "FilterExplanation"]


@dataclass(frozen=True)
class FilterBranch:
    """One registered rule of a filter: its name, its SQL, and (on request) its row count."""

    rule: str
    sql: str
    rows: int | None = None


@dataclass(frozen=True)
class FilterExplanation:
    """What :meth:`Authorizer.explain_filter` returns."""

    sql: str  #: the whole statement, as the database receives it
    params: dict[str, Any]  #: its bound parameters
    branches: list[FilterBranch]  #: the rules it is made of
    database_plan: str | None = None  #: ``EXPLAIN`` output, when asked for

    def __str__(self) -> str:
        lines = [self.sql, f"-- parameters: {self.params}"]
        for branch in self.branches:
            rows = "" if branch.rows is None else f" ({branch.rows} rows)"
            lines.append(f"-- rule {branch.rule!r}{rows}: {branch.sql}")
        if self.database_plan:
            lines += ["-- plan:", self.database_plan]
        return "\n".join(lines)


if TYPE_CHECKING:
    from typing_extensions import Unpack

_T = TypeVar("_T")
#: any ``Select``, whatever its columns: ``filter`` returns the same type it was given
_SelectT = TypeVar("_SelectT", bound="Select[Unpack[tuple[Any, ...]]]")
#: compiled filter clauses kept per plan (oldest dropped first)
_CACHE_SIZE = 512
#: the one bound parameter of a page statement: the keys of the objects it decides
_PAGE_KEYS = "bastion_page_keys"
#: the parameters of a single check's statement: the target's key, column by column
_ONE_KEY = "bastion_key_"
#: the branches per mask column of a page statement (bit j: branch j; a 32-bit integer)
_MASK_BITS = 30
#: a plan's sql_cache key: the context values' expected types (see _require_context)
_CONTEXT_CHECKS = ("context checks",)


class Authorizer:
    """Answer ``check``/``authorize``/``filter`` for one policy through one session."""

    def __init__(
        self,
        policy: Policy,
        session: Session,
        *,
        union_branches: bool = True,
        inline_loaded: bool = True,
    ) -> None:
        if not isinstance(policy, Policy):
            raise InvalidArgument(f"Authorizer needs a Policy, got {policy!r}")
        self.policy = policy
        self.session = session
        # The policy's plans by (permission, subject type, type(target)): ``type(None)`` for no
        # target, so the hot path needs no branch. Shared with the policy, which clears it.
        self._plans = policy.plans_by_call_key
        self._plans_by_type = policy.plans_by_type  # the same, nested, for check()
        #: compile a top-level OR to ``pk IN (branch UNION ALL branch ...)`` (index friendly)
        self.union_branches = union_branches
        #: write a subject's loaded collections into the SQL as values, ``org_id IN (3, 7)``,
        #: instead of a subquery over its relationship (``False``: always the subquery)
        self.inline_loaded = inline_loaded

    @property
    def session(self) -> Session:
        """The session every query of this Authorizer goes through."""
        return self._session

    @session.setter
    def session(self, session: Session) -> None:
        if not isinstance(session, Session):
            # Fix: a scoped_session (Flask-SQLAlchemy's db.session) was accepted, then pages
            # failed on it and cached grants were read from the session current at
            # construction, whatever the session of later calls. One Authorizer, one Session.
            raise InvalidArgument(
                f"Authorizer needs a Session, got {session!r}: an Authorizer answers through "
                "one session; for a scoped_session pass its current one (db.session()), or "
                "let the Flask integration make one per request"
            )
        self._session = session
        #: the context of a check called without context values (predicates never write to it)
        self._session_context: dict[str, Any] = {SESSION_KEY: session}
        self._session_info: dict[Any, Any] = session.info  # one dict for the session's life

    # checks ------------------------------------------------------------------------------
    def check(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> bool:
        """May ``subject`` do ``permission`` (on ``target``)? Python when loaded, else one query."""
        # The hot path, kept free of dispatch (W1): one dict lookup of the compiled plan, one
        # attribute test for required context, the predicate's closures. Everything that only
        # happens when data is missing lives in _not_loaded.
        try:
            plan = self._plans_by_type[type(target)][type(subject)][permission]
        except (KeyError, TypeError):
            plan = self._indexed_plan(permission, subject, target)
        if (lookup := plan.session_lookup) is not None and not context:
            # a stored grant: the predicate's own set lookup, made here (one call, not two)
            try:
                held = self._session_info[lookup[0]][id(subject)].tokens
            except (KeyError, AttributeError):
                pass  # not cached yet: the predicate loads (or asks) below
            else:
                if target is not None:
                    mark_authorized(type(target))
                    return lookup[1] in held and not is_deleted(target, self._session)
                return lookup[1] in held
        if plan.required_context:
            _require_context(plan, context)
        if target is not None:
            mark_authorized(type(target))
        if context:
            context[SESSION_KEY] = self._session
        else:  # the common call: a shared read-only context, no dict to fill per check
            context = self._session_context
        if QUERY_SCOPE_KEY in self._session_info and self._censored(plan):
            allowed = self._check_censored(plan, subject, target, context)
        else:
            try:
                allowed = plan.predicate(subject, target, context, None) is True
            except NotLoaded as missing:
                allowed = self._not_loaded(plan, subject, target, context, missing)
            except ObjectDeletedError:
                return False  # a Python rule loaded values of a deleted object: no row, in SQL
        if allowed and target is not None:  # (a target's class is mapped: plan() says so)
            # a deleted object has no row: the filter would not return it (see is_deleted; inline,
            # on allowed answers only: W2's check is a few attribute reads)
            state = target._sa_instance_state
            if state._deleted or state in self._session._deleted:
                return False
        return allowed

    def _not_loaded(
        self, plan: Plan, subject: Any, target: Any, context: dict[str, Any], missing: NotLoaded
    ) -> bool:
        """The rest of :meth:`check` when the predicate lacks data: decide a new object from its
        own values, walk again after a prefetch, or ask the database once."""
        if target is not None and _is_new(target):
            # no row to query: decide from the object's own values (loading the subject's)
            return self._check_lazily(plan, subject, target, context)
        if missing.prefetch is not None:  # e.g. a folder's ancestors: load them, walk again
            # Fix: keep the loaded ancestors referenced while walking (the identity map holds
            # weak references: they were collected at once and the walk fell back to a second
            # query), and tell the walk which keys were loaded (a dangling parent key ends it).
            loaded = self._execute(missing.prefetch).scalars().all()
            keys = frozenset(sa_inspect(obj).key for obj in loaded)
            walking = ANCESTORS_PREFETCHED.set((missing.start, keys))
            try:
                return plan.predicate(subject, target, context, None) is True
            except NotLoaded:
                pass  # something else is missing too: ask the database below
            finally:
                ANCESTORS_PREFETCHED.reset(walking)
        if plan.sql_error is None:
            return self.check_in_database(plan, subject, target, context)
        # No SQL form (check_only): load what is missing the ordinary way.
        token = LAZY_LOADS_ALLOWED.set(True)
        try:
            return plan.predicate(subject, target, context, None) is True
        except ObjectDeletedError:
            # Fix: an object deleted in the session (its row gone once the deletion is flushed,
            # which loading autoflushes) leaked SQLAlchemy's error out of check(); the database
            # path denies such an object (no row), so this path does too.
            return False
        finally:
            LAZY_LOADS_ALLOWED.reset(token)

    # authorized sessions ----------------------------------------------------------------------
    def _censored(self, plan: Plan) -> bool:
        """Does ``plan``'s Python predicate read relationships that this session's restriction
        (``authorize_queries``) may have loaded partially?

        Fix: an authorized session hides the rows its subject may not read from the
        relationships it loads (``doc.folder`` is None when the folder is hidden), and the
        Python path decided from that view: ``~target.folder.has(it.is_locked)`` was allowed on
        a locked folder the subject cannot see, where the database (and ``filter``) denied. Such
        plans are decided by the database in an authorized session."""
        scope = self._session_info.get(QUERY_SCOPE_KEY)
        if scope is None or plan.sql_error is not None:
            return False  # (a Python-only rule has no database path: it sees what it loads)
        key = ("censored", scope.policy)
        known = plan.sql_cache.get(key)
        if known is None:
            protected = {r.target_type for r in scope.policy.rules() if r.target_type is not None}
            reached = related_classes(plan.rule, plan.subject_type, plan.target_type)
            known = reached is None or any(
                issubclass(c, p) or issubclass(p, c) for c in reached for p in protected
            )
            _remember(plan.sql_cache, key, known)
        return bool(known)

    def _check_censored(
        self, plan: Plan, subject: Any, target: Any, context: dict[str, Any]
    ) -> bool:
        """:meth:`check` in an authorized session, for a plan that reads relationships the
        session restricts: one query (unrestricted, as all of bastion's own), where there is a
        row; a new object is decided from its own values as usual."""
        if target is not None and _is_new(target):
            return self._check_lazily(plan, subject, target, context)
        return self.check_in_database(plan, subject, target, context)

    @property
    def _inline(self) -> bool:
        """``inline_loaded``, except in an authorized session: a subject's collection loaded
        there may hold only the rows the session shows, so it is read in SQL, not inlined."""
        return self.inline_loaded and QUERY_SCOPE_KEY not in self._session_info

    def _execute(self, statement: Any) -> Any:
        """Run one of bastion's own queries (not restricted nor reported as a data access)."""
        return self.session.execute(statement.execution_options(**{INTERNAL: True}))

    def _lookup(self, permission: Hashable, subject: Any, target: Any) -> Plan:
        if target is not None:
            mark_authorized(type(target))
        try:
            return self._plans[(permission, type(subject), type(target))]
        except (KeyError, TypeError):
            return self._plan(permission, subject, target)

    def _indexed_plan(self, permission: Hashable, subject: Any, target: Any) -> Plan:
        """:meth:`_plan`, then filed where :meth:`check` looks first."""
        plan = self._plan(permission, subject, target)
        by_subject = self._plans_by_type.setdefault(type(target), {})
        by_subject.setdefault(type(subject), {})[permission] = plan
        return plan

    def _plan(self, permission: Hashable, subject: Any, target: Any) -> Plan:
        target_type = None if target is None else type(target)
        plan = self.policy.plan(permission, type(subject), target_type)  # validates, may raise
        self._plans[(permission, type(subject), type(target))] = plan
        return plan

    def authorize(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> None:
        """Like :meth:`check`, but raise :class:`~bastion.NotAuthorized` when denied; the error
        carries the :meth:`explain` trace as ``.explanation``."""
        if not self.check(subject, permission, target, **context):
            try:
                explanation = self.explain(subject, permission, target, **context)
            except Exception:  # noqa: BLE001 - the denial stands even if tracing it fails
                explanation = None
            raise NotAuthorized(subject, permission, target, explanation=explanation)

    # pages of objects -----------------------------------------------------------------------
    def check_many(
        self, subject: Any, permission: Hashable, objects: Iterable[Any], /, **context: Any
    ) -> dict[Any, bool]:
        """``{primary key: allowed}`` for every object (a composite key is a tuple). Objects whose
        rule inputs are loaded are decided in Python; the rest with one query per class."""
        return self._page(subject, [permission], objects, context, bool)

    def allowed_actions(
        self,
        subject: Any,
        objects: Any,
        /,
        actions: Iterable[Hashable] | None = None,
        **context: Any,
    ) -> Any:
        """The permissions ``subject`` holds on one object (a frozenset), or on each object of a
        list (``{primary key: frozenset}``, objects with the same actions sharing one), among
        ``actions`` (default: every permission with rules for the object's class). A page costs
        at most one query per class, whatever its size: a ``CASE WHEN`` per distinct branch of
        the actions' rules, packed into an integer column (:meth:`_page_statement`)."""
        single = not isinstance(objects, (list, tuple))
        items = [objects] if single else list(objects)
        if actions is None:
            actions = self._actions_for(subject, items)
        elif isinstance(actions, (str, bytes)):
            # Fix: actions="read" was taken as the actions 'r', 'e', 'a', 'd' (PermissionNotFound
            # for 'r'), which named the wrong mistake
            raise InvalidArgument(f"actions must be a list of permissions, got {actions!r}")
        actions = list(actions)
        result = self._page(subject, actions, items, context, _action_set_namer(actions))
        return result[_primary_key(objects)] if single else result

    def _actions_for(self, subject: Any, items: list[Any]) -> list[Hashable]:
        types = {type(o) for o in items}
        return [
            p
            for p in self.policy.permissions
            if any(self.policy.rules_for(p, type(subject), t) for t in types)
        ]

    def _page(
        self,
        subject: Any,
        actions: list[Hashable],
        objects: Iterable[Any],
        context: dict[str, Any],
        name: Callable[[int], Any],
    ) -> dict[Any, Any]:
        """``{key: name(mask)}`` (bit ``n`` of a mask: ``actions[n]`` is allowed), in page
        order; ``name`` is called once per distinct mask. Loaded and new objects are decided in
        Python, the rest with one query per class.

        A page of 200 unloaded objects spent more time here than in its query: the states, keys
        and class groups are taken for the whole page at once, every blind object of a class
        shares one mask, and the answers are bit masks (no set per object until the caller's
        result is built)."""
        context[SESSION_KEY] = self.session
        items = objects if isinstance(objects, list) else list(objects)
        pending_deletions = self._session._deleted  # (see is_deleted)
        if items and not pending_deletions:
            fast = self._blind_page(subject, actions, items, context, name)
            if fast is not None:
                return fast
        states = _states_of(items)
        keys = _keys_of(states, items)
        groups = _class_groups(items, keys)
        result: dict[Any, int] = dict.fromkeys(keys, 0)
        pages: dict[type, _ClassPage] = {}
        for cls, members in groups.items():
            page = pages[cls] = self._class_page(subject, actions, items[members[0]], context)
            if pending_deletions or any(states[i]._deleted for i in members):
                # deleted objects are denied everything, as check() does (see is_deleted)
                members = [i for i in members if not is_deleted(items[i], self._session)]
            self._decide_class(subject, page, members, items, states, keys, context, result)
        for cls, page in pages.items():
            wanted = page.asked()
            if wanted:
                self._page_in_database(subject, cls, page, wanted, context, result)
        named = {mask: name(mask) for mask in set(result.values())}
        return dict(zip(result, map(named.__getitem__, result.values()), strict=True))

    def _blind_page(
        self,
        subject: Any,
        actions: list[Hashable],
        items: list[Any],
        context: dict[str, Any],
        name: Callable[[int], Any],
    ) -> dict[Any, Any] | None:
        """The usual page, stored rows of one class none of whose rule inputs is loaded: one
        pass over the objects (each read once: for 200 objects, every further pass cost as much
        as the first, the objects having left the CPU's caches), one verdict in Python for all,
        and one query that returns only the allowed rows. None: not such a page, take the
        general path (:meth:`_page`'s other arguments and result)."""
        cls = type(items[0])
        page = self._class_page(subject, actions, items[0], context)
        if page.blind_keys is None:
            return None
        keys = _blind_keys_of(items, cls, page.blind_keys, _key_attribute(cls))
        if keys is None:
            return None
        verdict = page.blind_verdict(subject, items[0], context)
        if not page.blind_asked:
            return dict.fromkeys(keys, name(verdict))
        wanted = sorted(page.blind_asked)
        query = self._page_statement(subject, cls, page, wanted, context)
        width = query.width
        rows = self._execute_page(cls, query.statement, query.encode(keys))
        result: dict[Any, Any] = dict.fromkeys(keys, name(verdict))
        if len(wanted) == 1:  # the rows are the allowed keys, nothing else
            value = name(verdict | 1 << wanted[0])
            allowed = (row[0] for row in rows) if width == 1 else (tuple(row) for row in rows)
            for key in allowed:
                if key in result:  # (not a key asked for, e.g. matched by a collation: skip)
                    result[key] = value
            return result
        masks: dict[int, Any] = {}  # a row's mask (bit j: branch j) -> the named answer
        pairs = (
            rows  # (key, mask): the usual page, read as is
            if width == 1 and len(query.branch_actions) <= _MASK_BITS
            else (
                (row[0] if width == 1 else tuple(row[:width]), _row_mask(row, width))
                for row in rows
            )
        )
        for key, found in pairs:
            if key in result:
                mask = masks.get(found)
                if mask is None:
                    mask = verdict | _spread(query.actions_of(found), wanted)
                    mask = masks[found] = name(mask)
                result[key] = mask
        return result

    def _decide_class(
        self,
        subject: Any,
        page: _ClassPage,
        members: range | list[int],
        items: list[Any],
        states: list[Any],
        keys: list[Any],
        context: dict[str, Any],
        result: dict[Any, int],
    ) -> None:
        """Decide the objects of one class (by index in the page) in Python, as far as loaded."""
        blind = page.blind_keys  # (a page all blind, of one class, took _blind_page instead)
        for i in members:
            obj, state, key = items[i], states[i], keys[i]
            if blind is not None and state.key is not None and blind.isdisjoint(obj.__dict__):
                result[key] = page.blind_verdict(subject, obj, context)
                if page.blind_asked:
                    page.blind[key] = None
            else:
                result[key] = self._decide_one(page, subject, obj, state, key, context)

    def _class_page(
        self, subject: Any, actions: list[Hashable], obj: Any, context: Mapping[str, Any]
    ) -> _ClassPage:
        plans = [self._lookup(action, subject, obj) for action in actions]
        for plan in plans:
            if plan.required_context:
                _require_context(plan, context)
        page = _ClassPage(actions, plans, _blind_keys(plans))
        if QUERY_SCOPE_KEY in self._session_info:  # an authorized session: see _censored
            page.censored = frozenset(n for n, p in enumerate(plans) if self._censored(p))
            if page.censored:
                page.blind_keys = None  # (no verdict from a partial view either)
        return page

    def _decide_one(
        self,
        page: _ClassPage,
        subject: Any,
        obj: Any,
        state: Any,
        key: Any,
        context: dict[str, Any],
    ) -> int:
        """Try each action's predicate on ``obj`` (the mask of those it passes); what needs the
        database waits for the query."""
        mask = 0
        for n, plan in enumerate(page.plans):
            if n in page.censored and state.key is not None:
                page.pending[n][key] = None  # the query decides (see _censored)
                continue
            try:
                ok = plan.predicate(subject, obj, context, None) is True
            except ObjectDeletedError:
                ok = False  # as check() answers (a Python rule loaded a deleted object)
            except NotLoaded:
                # Fix: an object not in the database yet (transient, or pending without
                # autoflush) was looked up by key in the page query, found nowhere and
                # denied, where check() decides it from its own values: do the same.
                if plan.sql_error is not None or state.key is None:
                    ok = self._check_lazily(plan, subject, obj, context)
                else:
                    page.pending[n][key] = None
                    continue
            if ok:
                mask |= 1 << n
        return mask

    def _check_lazily(self, plan: Plan, subject: Any, obj: Any, context: Any) -> bool:
        token = LAZY_LOADS_ALLOWED.set(True)
        try:
            return plan.predicate(subject, obj, context, None) is True
        except ObjectDeletedError:
            return False  # deleted in the session, its row gone: as the database would say
        except NotLoaded as missing:
            # Fix: a SQL-only rule (policy.sql_rule) has no Python path even with lazy loads, and
            # the internal NotLoaded leaked out of check() for a new object. Say what to do.
            raise InvalidArgument(
                f"the rule for {plan.permission!r} needs the database ({missing}), and {obj!r} "
                "is not stored: flush it first"
            ) from None
        finally:
            LAZY_LOADS_ALLOWED.reset(token)

    def _page_in_database(
        self,
        subject: Any,
        cls: type,
        page: _ClassPage,
        wanted: list[int],
        context: Mapping[str, Any],
        result: dict[Any, int],
    ) -> None:
        """One query for the undecided objects of one class. It returns only the allowed
        objects: their keys and, when several actions are asked, one integer column of the
        branches that hold (:meth:`_page_statement`; fewer rows and columns to read than a
        boolean column per action: for a page of 200, reading the rows cost more than running
        the query)."""
        query = self._page_statement(subject, cls, page, wanted, context)
        width = query.width
        asked = [page.keys_for(n) for n in wanted]
        first = asked[0]
        same = all(keys is first or keys.keys() == first.keys() for keys in asked)
        keys = first if same else dict.fromkeys(k for ks in asked for k in ks)
        rows = self._execute_page(cls, query.statement, query.encode(list(keys)))
        bits = [1 << n for n in wanted]
        # bit j of a row's mask is branch j: the action masks of the few distinct row masks
        masks: dict[int, int] = {}
        get = result.get
        for row in rows:
            key = row[0] if width == 1 else tuple(row[:width])
            had = get(key)
            if had is None:
                continue  # not a key asked for (e.g. matched by a case-insensitive collation)
            found = 1 if len(bits) == 1 else _row_mask(row, width)
            mask = masks.get(found)
            if mask is None:
                mask = masks[found] = _spread(query.actions_of(found), wanted)
            if not same:  # some actions were decided in Python for some objects: keep those
                mask = sum(b for b, ks in zip(bits, asked, strict=True) if b & mask and key in ks)
            result[key] = had | mask

    def _execute_page(self, cls: type, statement: Select[Any], keys: Any) -> Any:
        """Run a page statement on the session's connection, after the session's autoflush (as
        ``Session.execute`` would do): the rows are plain tuples, without the ORM's per-row
        processing, which cost more than the query for a page of 200."""
        self.session._autoflush()  # not flush(): a no-op inside a flush or ``no_autoflush``
        connection = self.session.connection(bind_arguments={"mapper": cls})
        return connection.execute(statement, {_PAGE_KEYS: keys}).all()

    def _page_statement(
        self,
        subject: Any,
        cls: type,
        page: _ClassPage,
        wanted: list[int],
        context: Mapping[str, Any],
    ) -> _PageQuery:
        """``SELECT pk[, mask] WHERE pk IN (:keys) AND (<branch> OR <branch> ...)``, built once
        per (class, actions, rule inputs, dialect) and reused: the keys are its only parameter,
        so SQLAlchemy neither rebuilds it nor recomputes its cache key.

        The branches are the actions' rules split at their top-level ``OR``, each distinct
        branch once (read = public OR owner OR member and comment = owner OR member share two).
        With several actions the mask is ``CASE WHEN <branch j> THEN 2^j ELSE 0 END + ...``
        (only TRUE counts, as in a filter), and an action is allowed when one of its branches
        is: :meth:`_PageQuery.actions_of`. A shared branch with a subquery is then run once
        where it ran once per action (for four W6 actions, 4 subqueries instead of 6: the
        query took 12 % less)."""
        plans = [page.plans[n] for n in wanted]
        dialect = self.session.get_bind(mapper=cls).dialect.name
        inputs = tuple(plan.inputs.key(subject, context) for plan in plans)
        cacheable = all(k is not None for k in inputs)
        permissions = tuple(p.permission for p in plans)
        cache_key = ("page", cls, dialect, permissions, self._inline, inputs)
        cached = plans[0].sql_cache.get(cache_key) if cacheable else None
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        mapper: Any = sa_inspect(cls)
        pk = [getattr(cls, mapper.get_property_by_column(c).key) for c in mapper.primary_key]
        clauses = [self._cached_clause(p, cls, subject, context, union=False) for p in plans]
        branches, actions = _distinct_branches(clauses)
        columns: list[Any] = list(pk)
        if len(clauses) > 1:  # one integer column per 30 branches (within a 32-bit integer)
            for start in range(0, len(branches), _MASK_BITS):
                chunk = branches[start : start + _MASK_BITS]
                terms = [
                    sa.case((c, sa.literal_column(str(1 << i))), else_=sa.literal_column("0"))
                    for i, c in enumerate(chunk)
                ]
                columns.append(functools.reduce(operator.add, terms).label(f"bastion_mask_{start}"))
        statement, encode = _select_keys(cls, pk, columns, dialect)
        statement = statement.where(sa.or_(*branches))
        # the rows are read by position: SQLAlchemy need not map the cached compilation's
        # columns onto this statement's (the ORM sets the same option for its own statements;
        # for a page that mapping cost a tenth of the call, comparing Column objects)
        options = {INTERNAL: True, "_result_disable_adapt_to_context": True}
        built = _PageQuery(statement.execution_options(**options), len(pk), encode, actions)
        if cacheable:
            _remember(plans[0].sql_cache, cache_key, built)
        return built

    def check_in_database(
        self, plan: Plan, subject: Any, target: Any, context: Mapping[str, Any]
    ) -> bool:
        """Answer a check with one ``SELECT EXISTS`` (used when the Python path lacks data).

        The statement is built once per (class, rule inputs) and reused with the target's key
        as its parameters, as a page's is: building it and computing SQLAlchemy's cache key of
        it on every call was three quarters of a database check's time (270 → 60 µs on SQLite
        in W6)."""
        entity: Any = None
        values: tuple[Any, ...] = ()
        if target is not None:
            state = sa_inspect(target)
            if state.key is None:
                raise InvalidArgument(
                    f"{target!r} is not persistent, and the rule for {plan.permission!r} needs "
                    "the database (a SQL-only rule): flush it first"
                )
            entity, values = state.mapper.class_, state.key[1]
        inputs = plan.inputs.key(subject, context)
        cache_key = ("exists", entity, self._inline, inputs)
        query = plan.sql_cache.get(cache_key) if inputs is not None else None
        if query is None:
            query = self._exists_statement(plan, entity, subject, context)
            if inputs is not None:
                _remember(plan.sql_cache, cache_key, query)
        params = {f"{_ONE_KEY}{n}": value for n, value in enumerate(values)}
        return bool(self.session.execute(query, params).scalar())

    def _exists_statement(
        self, plan: Plan, entity: Any, subject: Any, context: Mapping[str, Any]
    ) -> Select[Any]:
        """``SELECT EXISTS (... WHERE pk = :key AND <rule>)`` (no target: ``SELECT <rule>``),
        the key's columns as the parameters ``bastion_key_0``, ``bastion_key_1``, ..."""
        clause = self._cached_clause(plan, entity, subject, context, union=False)
        if entity is None:
            query = sa.select(clause)
        else:
            mapper: Any = sa_inspect(entity)
            pk = [getattr(entity, mapper.get_property_by_column(c).key) for c in mapper.primary_key]
            match = [col == sa.bindparam(f"{_ONE_KEY}{n}") for n, col in enumerate(pk)]
            query = sa.select(sa.exists().where(*match, clause))
        return query.execution_options(**{INTERNAL: True})

    # reading the rules backwards and explaining them ------------------------------------------
    def who_can(
        self,
        permission: Hashable,
        target: Any = None,
        /,
        *,
        subject_type: type | None = None,
        **context: Any,
    ) -> Select[Any]:
        """A ``Select`` of the subjects (rows of the subject model the rules name) that may
        ``permission`` on ``target``: paginate it, count it. Every rule kind is read from the
        subject's side; a rule that cannot be (a Python function, a SQL-only rule, a subject
        attribute that is not a column) raises ``RuleNotTranslatable``, never a partial list."""
        target_type = None if target is None else type(target)
        subject_type = subject_type or self._subject_type(permission, target_type)
        if mapper_of(subject_type) is None:
            raise UnmappedClass(subject_type)
        plan = self.policy.plan(permission, subject_type, target_type)
        if plan.required_context:
            _require_context(plan, context)
        kinds = self._subject_kinds(permission, subject_type, target_type, plan, context)
        if target is None:
            clause = self._subjects_clause(kinds, None, context, subject_type)
            return sa.select(subject_type).where(clause)
        state = sa_inspect(target)
        if state.key is None:
            raise InvalidArgument(f"who_can() needs a persistent target, got {target!r}")
        alias = scoped_alias(state.mapper, "who_can", 0)
        clause = self._subjects_clause(kinds, alias, context, subject_type)
        keys = [state.mapper.get_property_by_column(c).key for c in state.mapper.primary_key]
        match = [getattr(alias, k) == v for k, v in zip(keys, state.key[1], strict=True)]
        exists = sa.select(sa.literal(1)).select_from(alias).where(*match, clause).exists()
        return sa.select(subject_type).where(exists)

    def _subject_kinds(
        self,
        permission: Hashable,
        subject_type: type,
        target_type: type | None,
        plan: Plan,
        context: Mapping[str, Any],
    ) -> list[tuple[Plan, Any]]:
        """The classes of :meth:`who_can`'s subject rows, each with the plan that judges it
        (one entry, ``subject_type``'s, when no subclass has rules of its own).

        Fix: a subclass of the subject type with its own rules (the nearest class's rules
        apply to a subject, ``Admin(User)``) had its rows judged by ``User``'s rule: listed where
        ``check`` denied them. Each class's rows now get its own rule, told apart by the
        discriminator (a hierarchy without one is refused rather than answered wrong)."""
        mapper: Any = sa_inspect(subject_type)
        kinds: list[tuple[Plan, Any]] = []
        for sub in mapper.self_and_descendants:
            sub_plan = plan  # (its context checked by who_can)
            if sub is not mapper:
                sub_plan = self.policy.plan(permission, sub.class_, target_type)
                if sub_plan.required_context:
                    _require_context(sub_plan, context)
            kinds.append((sub_plan, sub))
        if all(p.rule == plan.rule for p, _ in kinds):
            return [(plan, mapper)]
        if mapper.polymorphic_on is None:
            names = sorted(m.class_.__name__ for _, m in kinds)
            raise InvalidArgument(
                f"who_can({permission!r}) over {subject_type.__name__}: its subclasses have "
                f"rules of their own ({', '.join(names)}) and no discriminator tells their rows "
                "apart: ask who_can(..., subject_type=<each class>)"
            )
        return kinds

    def _subjects_clause(
        self,
        kinds: list[tuple[Plan, Any]],
        target: Any,
        context: Mapping[str, Any],
        subject_type: type,
    ) -> Any:
        base: Any = sa_inspect(subject_type)
        if len(kinds) == 1:
            env = SqlEnv(target, ROW, context, subject_type, subject_entity=subject_type)
            return sql_clause(compile_sql(kinds[0][0].rule, env))
        parts = []
        for plan, mapper in kinds:
            is_row = base.polymorphic_on == mapper.polymorphic_identity
            if mapper is base or mapper.local_table is base.local_table:  # the same table
                env = SqlEnv(target, ROW, context, mapper.class_, subject_entity=mapper.class_)
                parts.append(sa.and_(is_row, sql_clause(compile_sql(plan.rule, env))))
                continue
            # joined inheritance: the subclass's columns live in its own table, read in an
            # EXISTS over an alias of the subclass matched on the key
            alias = aliased(mapper.class_)
            env = SqlEnv(target, ROW, context, mapper.class_, subject_entity=alias)
            clause = sql_clause(compile_sql(plan.rule, env))
            keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
            same = [getattr(alias, k) == getattr(subject_type, k) for k in keys]
            row = (
                sa.select(sa.literal(1))
                .select_from(alias)
                .where(*same, clause)
                .correlate_except(alias)  # (the subject's table is two levels up)
                .exists()
            )
            parts.append(sa.and_(is_row, row))
        return sa.or_(*parts)

    def _subject_type(self, permission: Hashable, target_type: type | None) -> type:
        self.policy.require_permission(permission)
        found = {
            r.subject_type
            for r in self.policy.rules()
            if r.permission in (permission, ALL_PERMISSIONS)
            and (
                r.target_type is None
                if target_type is None
                else (r.target_type is not None and issubclass(target_type, r.target_type))
            )
            and mapper_of(r.subject_type) is not None
        }
        if len(found) != 1:
            names = sorted(c.__name__ for c in found) or ["none"]
            raise InvalidArgument(
                f"who_can({permission!r}): pass subject_type= (rules name {', '.join(names)})"
            )
        return found.pop()

    def explain(
        self, subject: Any, permission: Hashable, target: Any = None, /, **context: Any
    ) -> Explanation:
        """Why ``check`` answers as it does: for an allow, the rule and branch that matched (the
        tier of a grant, the role, the deferral); for a denial, every branch tried and why it
        failed. ``str()`` for a terminal, ``.to_dict()`` for JSON logs. May load lazily."""
        plan = self._lookup(permission, subject, target)
        if plan.required_context:
            _require_context(plan, context)
        context[SESSION_KEY] = self.session
        on = "" if target is None else f" on {describe(target)}"
        if target is not None and is_deleted(target, self._session):
            reason = (
                f"{describe(subject)} may not {permission!r}{on}: it was deleted in the session "
                "(no row for a query to find), which denies every permission"
            )
            return Explanation(str(permission), False, reason, [], "decision")
        children = []
        censored = QUERY_SCOPE_KEY in self._session_info and self._censored(plan)
        for record in plan.rules:
            rule = self.policy.resolve_rule(record, permission)
            try:
                if censored and not (target is not None and _is_new(target)):
                    trace = self._explain_in_database(rule, subject, target, context)
                else:
                    trace = explain_rule(rule, subject, target, context)
            except ObjectDeletedError:
                # Fix: SQLAlchemy's error leaked out for an object deleted in the session whose
                # values were not loaded (its row gone: check() denies it, as the database does)
                trace = Explanation(
                    str(rule),
                    False,
                    f"{describe(target)} was deleted: its row is gone, the values this rule "
                    "reads cannot be loaded",
                    kind="deleted",
                )
            where = f" on {record.target_type.__name__}" if record.target_type else ""
            children.append(
                Explanation(
                    record.name, trace.outcome, f"rule {record.name!r}{where}", [trace], "rule"
                )
            )
        allowed = any(c.outcome is True for c in children)
        if allowed:
            first = next(c for c in children if c.outcome is True)
            reason = f"{describe(subject)} may {permission!r}{on}: allowed by {first.reason}"
        elif not children:
            reason = f"{describe(subject)} may not {permission!r}{on}: no rule grants it"
        else:
            reason = (
                f"{describe(subject)} may not {permission!r}{on}: "
                f"{len(children)} rule(s) tried, none matched"
            )
        return Explanation(str(permission), allowed, reason, children, "decision")

    def _explain_in_database(
        self, rule: Any, subject: Any, target: Any, context: Mapping[str, Any]
    ) -> Explanation:
        """One rule of :meth:`explain`, asked of the database (see :meth:`_censored`): the
        relationships it reads are restricted in this session, and lazy loads would be too."""
        outcome = _holds_in_database(self.session, rule, subject, target, context, inline=False)
        verdict = "matches" if outcome else "does not match"
        return Explanation(
            str(rule),
            outcome,
            f"asked the database ({verdict}): this authorized session restricts the "
            "relationships the rule reads, so what it loaded is not the whole picture",
            kind="database",
        )

    def explain_filter(
        self,
        subject: Any,
        permission: Hashable,
        query: Any,
        /,
        *,
        entity: Any = None,
        counts: bool = False,
        database_plan: bool = False,
        **context: Any,
    ) -> FilterExplanation:
        """The SQL :meth:`filter` adds, with its parameters, the rules it is made of, and on
        request each rule's row count and the database's ``EXPLAIN`` of the whole statement.
        ``entity`` as in :meth:`filter` (fix: it was taken as a context value, so the filter
        honoured it while the branches described the statement's first entity)."""
        stmt = self.filter(subject, permission, query, entity=entity, **context)
        compiled = stmt.compile(self.session.get_bind())
        _, entity = _statement_and_entity(query, entity)
        plan = self.policy.plan(permission, type(subject), sa_inspect(entity).mapper.class_)
        branches = []
        for record in plan.rules:
            rule = self.policy.resolve_rule(record, permission)
            clause = sql_clause(compile_sql(rule, self._env(entity, subject, context)))
            count = None
            if counts:
                counted = sa.select(sa.func.count()).select_from(entity).where(clause)
                count = int(self._execute(counted).scalar() or 0)
            branches.append(
                FilterBranch(record.name, str(clause.compile(self.session.get_bind())), count)
            )
        explained = None
        if database_plan:
            explained = self._database_plan(stmt)
        return FilterExplanation(str(compiled), dict(compiled.params), branches, explained)

    def _database_plan(self, stmt: Select[Any]) -> str:
        dialect = self.session.get_bind().dialect.name
        prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
        compiled = stmt.compile(self.session.get_bind(), compile_kwargs={"literal_binds": True})
        rows = self.session.execute(sa.text(prefix + str(compiled))).all()
        return "\n".join(" ".join(str(v) for v in row) for row in rows)

    # filters -----------------------------------------------------------------------------
    @overload
    def filter(
        self,
        subject: Any,
        permission: Hashable,
        query: type[_T],
        /,
        *,
        entity: Any = None,
        **context: Any,
    ) -> Select[_T]: ...

    @overload
    def filter(
        self,
        subject: Any,
        permission: Hashable,
        query: _SelectT,
        /,
        *,
        entity: Any = None,
        **context: Any,
    ) -> _SelectT: ...

    def filter(
        self,
        subject: Any,
        permission: Hashable,
        query: Any,
        /,
        *,
        entity: Any = None,
        **context: Any,
    ) -> Select[Any]:
        """Narrow ``query`` (a mapped class or ``Select``) to rows ``subject`` may ``permission``.

        ``entity`` names the entity (class or alias) to filter when the statement's first column
        is not it. Returns a new ``Select``; compose it with ``where``/``join``/``order_by``/
        ``limit``/``offset`` or count it.
        """
        stmt, entity = _statement_and_entity(query, entity)
        cls = sa_inspect(entity).mapper.class_
        mark_authorized(cls)
        plan = self.policy.plan(permission, type(subject), cls)
        if plan.sql_error is not None:
            raise RuleNotTranslatable(
                plan.rule, f"{permission!r} cannot be filtered in SQL: {plan.sql_error}"
            )
        if plan.required_context:
            _require_context(plan, context)
        clause = self.filter_clause(plan, entity, subject, context)
        if isinstance(clause, True_):
            return stmt  # nothing to narrow (e.g. an admin): no ``WHERE true``
        return stmt.where(clause)

    def filter_clause(
        self, plan: Plan, entity: Any, subject: Any, context: Mapping[str, Any]
    ) -> ColumnElement[bool]:
        """The ``WHERE`` expression of :meth:`filter` for ``entity`` (union shape if enabled)."""
        union = self.union_branches and isinstance(plan.rule, Or)
        return self._cached_clause(plan, entity, subject, context, union=union)

    def _cached_clause(
        self, plan: Plan, entity: Any, subject: Any, context: Mapping[str, Any], *, union: bool
    ) -> ColumnElement[bool]:
        """Build the clause, or reuse the one built for equal inputs (clauses are immutable)."""
        key = plan.inputs.key(subject, context)
        if key is not None:
            key = (entity, union, self._inline, key)
            cached = plan.sql_cache.get(key)
            if cached is not None:
                return cached  # type: ignore[no-any-return]
        clause = None
        if union:
            clause = self._union_clause(plan.rule, entity, subject, context)  # type: ignore[arg-type]
        if clause is None:
            clause = self._clause(plan, entity, subject, context)
        if key is not None:
            _remember(plan.sql_cache, key, clause)
        return clause

    def _clause(
        self, plan: Plan, entity: Any, subject: Any, context: Mapping[str, Any]
    ) -> ColumnElement[bool]:
        return sql_clause(compile_sql(plan.rule, self._env(entity, subject, context)))

    def _union_clause(
        self, rule: Or, entity: Any, subject: Any, context: Mapping[str, Any]
    ) -> ColumnElement[bool] | None:
        mapper = sa_inspect(entity).mapper
        branch_entity = scoped_alias(mapper, "branch", 0)
        env = self._env(branch_entity, subject, context)
        branches = []
        for item in rule.items:
            value = compile_sql(item, env)
            if value is True:
                return sa.true()
            if value is not False and value is not None:  # UNKNOWN/FALSE branches select nothing
                branches.append(value)
        if len(branches) < 2:
            return None
        keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        selects = [sa.select(*(getattr(branch_entity, k) for k in keys)).where(b) for b in branches]
        union = sa.union_all(*selects)
        outer = [getattr(entity, k) for k in keys]
        left = outer[0] if len(outer) == 1 else sa.tuple_(*outer)
        if not all(bitmap_friendly(b, branch_entity) for b in branches):
            return key_in(left, union)
        # PostgreSQL ORs bitmap index scans over flat branches: the plain OR reads each row once
        plain = sql_clause(compile_sql(rule, self._env(entity, subject, context)))
        if all(subquery_free(b) for b in branches):
            # no subquery at all (e.g. a loaded subject collection written in as values):
            # SQLite answers the OR with one index per branch too (a subquery made it scan)
            return plain
        return per_dialect(key_in(left, union), postgresql=plain)

    def _env(self, entity: Any, subject: Any, context: Mapping[str, Any]) -> SqlEnv:
        return SqlEnv(entity, subject, context, type(subject), inline_loaded=self._inline)


def _statement_and_entity(query: Any, entity: Any) -> tuple[Select[Any], Any]:
    if isinstance(query, type):
        if mapper_of(query) is None:
            raise UnmappedClass(query)
        if entity is not None:
            _require_mapped(entity)
            if entity is not query:
                return _statement_and_entity(sa.select(query), entity)
        return sa.select(query), query
    if not isinstance(query, Select):
        raise InvalidArgument(f"filter() takes a mapped class or a Select, got {query!r}")
    if entity is None:
        descriptions = query.column_descriptions
        entity = descriptions[0].get("entity") if descriptions else None
        if entity is None:
            raise InvalidArgument(
                "cannot tell which entity to filter in this Select: pass entity=Model"
            )
    else:
        _require_mapped(entity)
        if not _selects_from(query, entity):
            # filtering an entity the statement does not select from would add it to FROM: a
            # cross join that repeats every row once per allowed row of the other entity
            raise InvalidArgument(f"the statement does not select from {entity!r}")
    return query, entity


def _require_mapped(entity: Any) -> None:
    if isinstance(entity, type):
        if mapper_of(entity) is None:
            raise UnmappedClass(entity)
    elif sa_inspect(entity, raiseerr=False) is None or mapper_of(entity) is None:
        raise InvalidArgument(f"entity= takes a mapped class or alias, got {entity!r}")


def _selects_from(query: Select[Any], entity: Any) -> bool:
    selectable = sa_inspect(entity).selectable
    return any(
        selectable in sql_util.find_tables(f, include_aliases=True, include_joins=True)
        or f is selectable
        for f in query.get_final_froms()
    )


def _primary_key(obj: Any) -> Any:
    """The identity of a persistent object: its key value, or a tuple for a composite key."""
    return _key_of(_state_of(obj), obj)


def _state_of(obj: Any) -> Any:
    try:
        return instance_state(obj)
    except AttributeError:
        raise InvalidArgument(f"{obj!r} is not an instance of a mapped class") from None


def _key_of(state: Any, obj: Any) -> Any:
    key = state.key
    values = state.mapper.primary_key_from_instance(obj) if key is None else key[1]
    return values[0] if len(values) == 1 else tuple(values)


def _states_of(items: list[Any]) -> list[Any]:
    """The instance states of a page's objects (one C-level map; per object only to name the
    object that is not mapped)."""
    try:
        return list(map(instance_state, items))
    except AttributeError:
        return [_state_of(obj) for obj in items]


def _blind_keys_of(
    items: list[Any], cls: type, blind: frozenset[str], attribute: str | None
) -> list[Any] | None:
    """The keys of ``items`` (see :func:`_key_of`) if each is a persistent ``cls``, not deleted,
    with none of ``blind`` loaded, else None (one pass: see :meth:`Authorizer._blind_page`).

    A one-column key is read from the object's ``attribute`` (its ``__dict__`` is read anyway)
    unless the object has unflushed changes: then, and when it is not loaded, from the identity
    key, as :func:`_key_of` does. The identity key is two more objects to read per object,
    which cost a fifth of the pass over a page of 200 whose objects had left the CPU's caches."""
    keys: list[Any] = []
    append = keys.append
    unloaded = blind.isdisjoint
    for obj in items:
        if type(obj) is not cls:
            return None  # several classes (or one not mapped): the general path
        try:
            state = instance_state(obj)
        except AttributeError:
            return None  # not mapped: the general path says so
        ident = state.key
        values = obj.__dict__
        if ident is None or state._deleted or not unloaded(values):
            return None  # (deleted: the general path denies it, see is_deleted)
        if attribute is None or state.modified or (key := values.get(attribute)) is None:
            key = ident[1][0] if len(ident[1]) == 1 else tuple(ident[1])
        append(key)
    return keys


#: :func:`_key_attribute` by class
_KEY_ATTRIBUTES: dict[type, str | None] = {}


def _key_attribute(cls: type) -> str | None:
    """The attribute that holds a mapped class's one-column primary key (None: not mapped, or a
    composite key)."""
    if cls in _KEY_ATTRIBUTES:
        return _KEY_ATTRIBUTES[cls]
    mapper = mapper_of(cls)
    name = None
    if mapper is not None and len(mapper.primary_key) == 1:
        name = str(mapper.get_property_by_column(mapper.primary_key[0]).key)
    if len(_KEY_ATTRIBUTES) >= _CACHE_SIZE:
        _KEY_ATTRIBUTES.clear()  # classes made on the fly (tests): keep the cache bounded
    _KEY_ATTRIBUTES[cls] = name
    return name


@dataclass(frozen=True)
class _PageQuery:
    """A page statement (:meth:`Authorizer._page_statement`) and how to read its rows."""

    statement: Select[Any]
    width: int  #: the key's columns, first in a row
    encode: Callable[[list[Any]], Any]  #: the keys as the statement's one parameter
    #: per branch of the mask, the actions (bit i: the i-th asked) it allows
    branch_actions: tuple[int, ...]

    def actions_of(self, found: int) -> int:
        """The actions (bit i: the i-th asked) allowed by a row whose mask is ``found`` (bit
        j: branch j holds)."""
        found = int(found)
        out = 0
        for j, actions in enumerate(self.branch_actions):
            if found >> j & 1:
                out |= actions
        return out


def _distinct_branches(clauses: list[Any]) -> tuple[list[Any], tuple[int, ...]]:
    """The distinct top-level ``OR`` branches of the clauses, and per branch the clauses (bit
    i: clause i) that have it. Two branches are the same when SQLAlchemy's cache keys say so
    (the structure its statement cache relies on) and their bound values are equal; a branch
    without a cache key is never merged."""
    branches: list[Any] = []
    owners: list[int] = []
    identities: list[Any] = []
    for i, clause in enumerate(clauses):
        for branch in _or_branches(clause):
            identity = _branch_identity(branch)
            for j, seen in enumerate(identities):
                if identity is not None and seen == identity:
                    owners[j] |= 1 << i
                    break
            else:
                branches.append(branch)
                owners.append(1 << i)
                identities.append(identity)
    return branches, tuple(owners)


def _branch_identity(branch: Any) -> Any:
    """What makes two branches the same SQL: the cache key's structure and the bound values in
    its order (None: SQLAlchemy cannot key it). ``_generate_cache_key`` is SQLAlchemy's own
    (private) way to tell two statements apart for its compiled cache, public in all but name
    since 1.4; a page raises, and the tests fail, if it ever goes."""
    key = branch._generate_cache_key()
    if key is None:
        return None
    values = [(type(b.effective_value), b.effective_value) for b in key.bindparams]
    return key.key, values


def _or_branches(clause: Any) -> list[Any]:
    inner = clause
    while isinstance(inner, Grouping):
        inner = inner.element
    if isinstance(inner, BooleanClauseList) and inner.operator is operator.or_:
        return list(inner.clauses)
    return [clause]


def _row_mask(row: Any, width: int) -> int:
    """A page row's mask (bit j: branch j holds), from its mask columns (30 branches each)."""
    if len(row) == width + 1:
        return int(row[width])
    return sum(int(m) << _MASK_BITS * j for j, m in enumerate(row[width:]))


def _spread(found: int, wanted: list[int]) -> int:
    """A mask of the asked actions (bit i: ``wanted[i]``) as a page mask (bit ``wanted[i]``)."""
    return sum(1 << n for i, n in enumerate(wanted) if found >> i & 1)


def _keys_of(states: list[Any], items: list[Any]) -> list[Any]:
    """The primary key of each object (see :func:`_key_of`); a persistent object with a
    one-column key, the usual case, is read inline."""
    return [
        ident[1][0]
        if (ident := state.key) is not None and len(ident[1]) == 1
        else _key_of(state, obj)
        for state, obj in zip(states, items, strict=True)
    ]


def _class_groups(items: list[Any], keys: list[Any]) -> dict[type, range | list[int]]:
    """The page's objects by class (their indexes in page order), refusing equal keys of two
    classes: results are keyed by primary key alone."""
    classes = set(map(type, items))
    if len(classes) <= 1:
        return {type(items[0]): range(len(items))} if items else {}
    groups: dict[type, list[int]] = {}
    owners: dict[Any, type] = {}
    for i, (obj, key) in enumerate(zip(items, keys, strict=True)):
        cls = type(obj)
        # Fix: objects of two classes with equal keys (Document 1, Folder 1) shared one entry
        # of the result, each silently getting the other's actions. Refused instead.
        if owners.setdefault(key, cls) is not cls:
            raise InvalidArgument(
                f"the page holds a {owners[key].__name__} and a {cls.__name__} with the "
                f"same key {key!r}: results are keyed by primary key, ask once per class"
            )
        groups.setdefault(cls, []).append(i)
    return dict(groups)


def _action_set_namer(actions: list[Hashable]) -> Callable[[int], frozenset[Hashable]]:
    """A page mask as the frozenset of its actions, for :meth:`Authorizer._page` (which names
    each distinct mask once: the keys with equal masks share one frozenset; a set per key,
    copied for the caller to change, cost a fifth of a page of 200)."""

    def name(mask: int) -> frozenset[Hashable]:
        return frozenset(a for n, a in enumerate(actions) if mask >> n & 1)

    return name


@dataclass
class _ClassPage:
    """The objects of one class in a page: the plans of its actions and what awaits the query."""

    actions: list[Hashable]
    plans: list[Plan]
    #: the union of the plans' ``target_reads``; None: try the predicates on every object
    blind_keys: frozenset[str] | None
    #: per action, the keys of the objects (not blind) its query must decide, in page order
    pending: list[dict[Any, None]] = field(default_factory=list)
    #: the keys of the blind objects, none of whose rule inputs is loaded
    blind: dict[Any, Any] = field(default_factory=dict)
    #: the actions (by index) whose plans an authorized session's restriction makes the query
    #: decide for every stored object (:meth:`Authorizer._censored`)
    censored: frozenset[int] = frozenset()
    #: the mask of the actions blind objects are given in Python (None until the first one) ...
    blind_mask: int | None = None
    #: ... and those the database must decide for them (by index)
    blind_asked: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self.pending = [{} for _ in self.plans]

    def blind_verdict(self, subject: Any, obj: Any, context: Any) -> int:
        """The mask of an object none of whose rule inputs is loaded: the first such object's
        answer is every such object's (see :mod:`bastion.rules.reads`), so the predicates run
        once. The caller files the object's key in :attr:`blind` when :attr:`blind_asked`."""
        if self.blind_mask is None:
            verdicts = [_try_blind(plan, subject, obj, context) for plan in self.plans]
            self.blind_mask = sum(1 << n for n, v in enumerate(verdicts) if v)
            self.blind_asked = frozenset(n for n, v in enumerate(verdicts) if v is None)
        return self.blind_mask

    def asked(self) -> list[int]:
        """The actions (by index) with objects the database must decide."""
        blind = bool(self.blind)
        return [
            n for n, keys in enumerate(self.pending) if keys or (blind and n in self.blind_asked)
        ]

    def keys_for(self, n: int) -> dict[Any, Any]:
        """The keys the database must decide for action ``n``."""
        if n not in self.blind_asked or not self.blind:
            return self.pending[n]
        return {**self.pending[n], **self.blind} if self.pending[n] else self.blind


def _try_blind(plan: Plan, subject: Any, obj: Any, context: Any) -> bool | None:
    try:
        return plan.predicate(subject, obj, context, None) is True
    except NotLoaded:
        return None


def _blind_keys(plans: list[Plan]) -> frozenset[str] | None:
    """What must be unloaded for an object to be blind to every plan (None: never blind).
    While lazy loads are allowed (inside a Python-only rule) a missing attribute is loaded
    instead of raising NotLoaded, so no object is blind then."""
    if LAZY_LOADS_ALLOWED.get():
        return None
    keys: frozenset[str] = frozenset()
    for plan in plans:
        if plan.target_reads is None or plan.sql_error is not None:
            return None
        keys |= plan.target_reads
    return keys


def _select_keys(
    cls: type, pk: list[Any], columns: list[Any], dialect: str
) -> tuple[Select[Any], Callable[..., Any]]:
    """``SELECT columns`` of the rows whose key is in ``:keys``, one parameter for the whole
    list, and how to pass the keys in it.

    The statement text must not depend on the page (then the driver's and SQLAlchemy's caches
    hit, and nothing is rendered per call): on PostgreSQL ``pk = ANY(:keys)``, one array; on
    SQLite, integer keys as one JSON array, ``FROM json_each(:keys) JOIN t ON t.pk = value``
    (a key probe per element: ``pk IN (SELECT value FROM json_each(...))`` first sorted the
    keys into a temporary index, which made the query 1.5x slower for a page of 200);
    elsewhere an expanding parameter (rendered per call from the cached compilation)."""
    statement = sa.select(*columns)
    if len(pk) > 1:
        match = sa.tuple_(*pk).in_(sa.bindparam(_PAGE_KEYS, expanding=True))
        return statement.where(match), list
    integers = isinstance(pk[0].type, sa.Integer)
    if dialect == "postgresql":
        array = postgresql.ARRAY(pk[0].type)
        if integers:
            # one text parameter cast to an array: the driver's list adapter tests every
            # element (a regular expression each), which cost more than PostgreSQL's parsing
            text = sa.cast(sa.bindparam(_PAGE_KEYS, type_=sa.String), array)
            return statement.where(pk[0] == sa.any_(text)), _array_integers
        keys = sa.bindparam(_PAGE_KEYS, type_=array)
        return statement.where(pk[0] == sa.any_(keys)), list
    if dialect == "sqlite" and integers:
        values = sa.func.json_each(sa.bindparam(_PAGE_KEYS, type_=sa.String)).table_valued("value")
        return statement.join_from(values, cls, pk[0] == values.c.value), _json_integers
    return statement.where(pk[0].in_(sa.bindparam(_PAGE_KEYS, expanding=True))), list


def _json_integers(keys: list[Any]) -> str:
    """Integer keys as a JSON array, in ascending order (anything else is refused rather than
    compared as text). SQLite probes the table once per element, in the array's order: in
    key order the probes walk the B-tree forward, which made a page of 200 rows whose pages had
    left the CPU's caches 25 % faster to read."""
    if keys and set(map(type, keys)) != {int}:
        raise InvalidArgument(f"integer primary keys expected, got {keys!r}")
    return repr(sorted(keys))  # a list of ints' repr is its JSON, without json's per-item calls


def _array_integers(keys: list[Any]) -> str:
    """Integer keys as a PostgreSQL array literal, ``{1, 2, 3}`` (see :func:`_json_integers`;
    PostgreSQL sorts an ``= ANY`` array for an index scan itself, so the order is kept)."""
    if keys and set(map(type, keys)) != {int}:
        raise InvalidArgument(f"integer primary keys expected, got {keys!r}")
    return "{" + repr(keys)[1:-1] + "}"


def _remember(cache: dict[Hashable, Any], key: Hashable, value: Any) -> None:
    """Keep ``value`` in a plan's SQL cache, dropping the oldest entry when it is full.

    Plans, and so their caches, are shared by every thread's Authorizer. Fix: two threads
    evicting at once dropped the same oldest entry, and the second raised KeyError out of
    ``check``/``filter`` (a web server's threads, one new subject each, once the cache was
    full). An eviction that lost such a race is skipped; the cache may then hold a few entries
    more than its size for a moment, never fewer than it needs."""
    if len(cache) >= _CACHE_SIZE:
        # another thread evicted it, or changed the dict while we looked: skip
        with contextlib.suppress(KeyError, RuntimeError, StopIteration):
            del cache[next(iter(cache))]
    cache[key] = value


@register_explainer(SqlRule)
def _explain_sql_rule(rule: SqlRule, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    """A SQL-only rule has no in-process path: the explanation asks the database."""
    session = c.get(SESSION_KEY)
    state = sa_inspect(t, raiseerr=False) if t is not None else None
    if session is None or state is None or state.key is None:
        return Explanation(
            str(rule), None, f"SQL-only rule {rule.name}: no in-process path", kind="SqlRule"
        )
    outcome = _holds_in_database(session, rule, s, t, c)
    verdict = "matches" if outcome else "does not match"
    return Explanation(
        str(rule),
        outcome,
        f"SQL-only rule {rule.name} (no in-process path, asked the database): {verdict}",
        kind="SqlRule",
    )


def _holds_in_database(
    session: Session,
    rule: Any,
    subject: Any,
    target: Any,
    context: Mapping[str, Any],
    *,
    inline: bool = True,
) -> bool:
    """Does ``rule`` hold for ``subject`` on the stored ``target`` (None: no target)? One
    ``SELECT`` of bastion's own (not restricted by an authorized session), for explanations."""
    if target is None:
        env = SqlEnv(None, subject, context, type(subject), inline_loaded=inline)
        query = sa.select(sql_clause(compile_sql(rule, env)))
    else:
        state = sa_inspect(target)
        entity = state.mapper.class_
        env = SqlEnv(entity, subject, context, type(subject), inline_loaded=inline)
        keys = [state.mapper.get_property_by_column(c).key for c in state.mapper.primary_key]
        match = [getattr(entity, k) == v for k, v in zip(keys, state.key[1], strict=True)]
        query = sa.select(sa.exists().where(*match, sql_clause(compile_sql(rule, env))))
    return bool(session.execute(query.execution_options(**{INTERNAL: True})).scalar())


def _require_context(plan: Plan, context: Mapping[str, Any]) -> None:
    """Every ``ctx`` value a rule reads must be passed, whichever branch decides, and be of
    the type of the column it is compared with.

    Fix: a value of another type (``level=\'1\'`` for an integer column, a datetime for a
    date) was compared as given: Python and SQL disagreed (``1 == \'1\'``), or Python raised
    TypeError (``<`` between them), and a string passed to ``in_(ctx.x)`` was taken as its
    characters. Registration checks literals the same way."""
    for name in plan.inputs.context_names:
        if name not in context:
            raise MissingContext(name)
    checks = plan.sql_cache.get(_CONTEXT_CHECKS)
    if checks is None:
        checks = context_columns(plan.rule, plan.subject_type, plan.target_type)
        plan.sql_cache[_CONTEXT_CHECKS] = checks
    for name, prop, many in checks:
        value = context[name]
        if many:
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise InvalidArgument(
                    f"ctx.{name} is compared with in_(): a collection, got {value!r}"
                )
            values = list(value)
        else:
            values = [value]
        for item in values:
            problem = value_mismatch(prop, item)
            if problem is not None:
                raise InvalidArgument(f"ctx.{name}: {problem}")


def is_deleted(target: Any, session: Session) -> bool:
    """Is ``target`` deleted: by a flush (``was_deleted``, also once committed and detached), or
    marked by ``session.delete()`` and not flushed yet? Such an object has no row once the
    deletion is flushed, which every query does first (autoflush), so ``filter`` never returns
    it and the database path of ``check`` finds nothing: it is denied every permission, whatever
    its loaded values say (they said allow on the Python path, deny on the database path).

    Read on allowed answers only. ``InstanceState._deleted`` is what ``was_deleted`` returns and
    ``Session._deleted`` the dict behind ``Session.deleted`` (which copies it into a new set
    on every call); both private in name, both in SQLAlchemy since 0.x."""
    state = getattr(target, "_sa_instance_state", None)
    if state is None:
        return False
    return bool(state._deleted) or state in session._deleted


def _is_new(obj: Any) -> bool:
    state = sa_inspect(obj, raiseerr=False)
    return state is not None and state.key is None
