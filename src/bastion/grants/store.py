"""``GrantStore``: create, grant, revoke and list stored grants; every change audited.

Each method is one unit of work: when the session has no transaction open, the method runs in its
own transaction and commits; inside the caller's transaction it runs in a SAVEPOINT, so a failed
change leaves nothing behind and the caller decides when to commit. Every change writes an audit
row (who, what, when, optional reason) in the same unit of work, and clears the session's cached
effective grants, so the next check sees it.

Granting what is already granted updates its validity window (no duplicate row, no error), and
revoking what is not granted is a no-op that is still audited; both are safe under concurrency
(``INSERT ... ON CONFLICT``).

Concurrency: under PostgreSQL's default READ COMMITTED, changes of the same rows by concurrent
transactions wait for each other and never fail. A transaction can still be lost to a concurrent
one: a serialization failure (``REPEATABLE READ``/``SERIALIZABLE``) or a deadlock (several changes
in one transaction, taking row locks in different orders). A change that runs in its own
transaction is then retried (:data:`RETRIES` attempts in all); inside the caller's transaction,
which the database has aborted, the store raises :class:`GrantConflict`: roll back and retry the
whole transaction. (Failures raised by the caller's own ``commit`` are SQLAlchemy's.)
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstanceState, Session

from bastion.errors import (
    BastionError,
    DuplicateName,
    InvalidArgument,
    InvalidName,
    PermissionNotFound,
)
from bastion.grants.effective import forget_grants, grant_paths
from bastion.grants.models import GLOBAL, GrantModels, UserLinks, scope_key
from bastion.grants.rules import object_scope_type, utcnow
from bastion.policy import validate_permission_name

__all__ = ["RETRIES", "GrantConflict", "GrantStore", "Scope"]

#: ``None`` (global), ``("org", 42)``, or a mapped instance (scope = that one object).
Scope = Any

#: Attempts of a change that runs in its own transaction and is lost to a concurrent one.
RETRIES = 3

#: SQLSTATE -> why a transaction was lost to a concurrent one.
_CONFLICTS = {"40001": "serialization failure", "40P01": "deadlock"}

_P = ParamSpec("_P")
_T = TypeVar("_T")


class GrantConflict(BastionError):
    """A change lost to a concurrent transaction (a serialization failure or a deadlock).

    Raised inside the caller's transaction, which the database has aborted (roll it back and
    retry it), or when a change in its own transaction failed :data:`RETRIES` times. ``reason``
    is ``"serialization failure"`` or ``"deadlock"``; the database error is ``__cause__``.
    """

    def __init__(self, method: str, reason: str) -> None:
        self.method = method
        self.reason = reason
        super().__init__(
            f"GrantStore.{method} lost to a concurrent transaction ({reason}): "
            "roll back and retry the transaction"
        )


def _conflict(error: sa.exc.DBAPIError) -> str | None:
    orig = error.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return _CONFLICTS.get(code) if isinstance(code, str) else None


def _unit_of_work(
    method: Callable[Concatenate[GrantStore, _P], _T],
) -> Callable[Concatenate[GrantStore, _P], _T]:
    """Retry a change that runs in its own transaction when it is lost to a concurrent one;
    turn such a loss inside the caller's transaction into :class:`GrantConflict`."""

    @functools.wraps(method)
    def run(self: GrantStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        attempts = 1 if self.session.in_transaction() else RETRIES
        for attempt in range(1, attempts + 1):
            try:
                return method(self, *args, **kwargs)
            except sa.exc.DBAPIError as error:
                reason = _conflict(error)
                if reason is None:
                    raise
                if attempt == attempts:
                    raise GrantConflict(method.__name__, reason) from error
            if self.session.in_transaction():
                self.session.rollback()
            time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    return run


class GrantStore:
    """Manage permissions, bundles, groups and grants through ``session``.

    ``actor`` (a string, e.g. the admin's login) is written to every audit row.
    """

    def __init__(self, session: Session, models: GrantModels, *, actor: str | None = None) -> None:
        self.session = session
        self.models = models
        self.actor = actor

    # -- units of work -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _change(
        self, action: str, subject: str, obj: str = "", scope: str = "", reason: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The unit of work of one change; yields its audit row, which the body may complete."""
        nested = self.session.in_transaction()
        if nested:
            _begin_sqlite(self.session)
        # (fix: a bundle created with many tokens overflowed the audit's 255-character object
        # column: PostgreSQL refused the change with a DataError; the text is shortened instead)
        row = {
            "action": action,
            "subject": _fit(subject, 255),
            "object": _fit(obj, 255),
            "scope": _fit(scope, 320),
        }
        with (self.session.begin_nested if nested else self.session.begin)():
            yield row
            self.session.execute(
                sa.insert(self.models.audit).values(
                    # Fix: the column default (CURRENT_TIMESTAMP) is the server's local time on
                    # PostgreSQL; grants store naive UTC, and so does the audit.
                    at=utcnow(),
                    actor=self.actor,
                    reason=reason,
                    **row,
                )
            )
        forget_grants(self.session)

    # -- permissions, bundles, groups ----------------------------------------------------------
    @_unit_of_work
    def create_permission(
        self, token: str, description: str = "", *, reason: str | None = None
    ) -> Any:
        """Create a permission (``InvalidName`` for a bad token)."""
        _token(token)
        with self._change("create permission", token, reason=reason):
            permission = self.models.Permission(token=token, description=description)
            self._insert("permission", token, permission)
        return permission

    @_unit_of_work
    def create_bundle(
        self,
        label: str,
        permissions: tuple[str, ...] | list[str] = (),
        *,
        reason: str | None = None,
    ) -> Any:
        """Create a bundle holding ``permissions``."""
        _label(label)
        permissions = _tokens(permissions)
        with self._change("create bundle", label, ",".join(permissions), reason=reason):
            bundle = self.models.Bundle(label=label)
            self._insert("bundle", label, bundle)
            for token in permissions:
                self._link_bundle(bundle.id, self._permission_id(token))
        return bundle

    @_unit_of_work
    def create_group(self, label: str, *, reason: str | None = None) -> Any:
        """Create a user group."""
        _label(label)
        with self._change("create group", label, reason=reason):
            group = self.models.Group(label=label)
            self._insert("group", label, group)
        return group

    @_unit_of_work
    def rename(self, kind: str, old: str, new: str, *, reason: str | None = None) -> None:
        """Rename a ``"permission"`` (its token), ``"bundle"`` or ``"group"`` (its label)."""
        cls, column = self._kind(kind)
        _token(new) if kind == "permission" else _label(new)
        if not isinstance(old, str):  # (fix: reached the driver, which raised its own error)
            raise InvalidArgument(f"a {kind} is named by a string, got {old!r}")
        with self._change(f"rename {kind}", old, new, reason=reason):
            if old != new and self._exists(kind, new):
                raise DuplicateName(kind, new, "already exists")
            found = self.session.execute(
                sa.update(cls).where(getattr(cls, column) == old).values({column: new})
            )
            if found.rowcount != 1:  # type: ignore[attr-defined]
                raise _missing(kind, old)

    @_unit_of_work
    def delete(self, kind: str, name: str, *, reason: str | None = None) -> None:
        """Delete a permission, bundle or group; its links go with it (``ON DELETE CASCADE``)."""
        cls, _ = self._kind(kind)
        with self._change(f"delete {kind}", name, reason=reason):
            row_id = self._id(kind, name)
            self._delete_links(kind, row_id)
            self.session.execute(sa.delete(cls).where(cls.id == row_id))

    @_unit_of_work
    def add_to_bundle(self, bundle: str, *tokens: str, reason: str | None = None) -> None:
        """Put permissions in a bundle."""
        tokens = _tokens(tokens)
        with self._change("add to bundle", bundle, ",".join(tokens), reason=reason):
            bundle_id = self._id("bundle", bundle)
            for token in tokens:
                self._link_bundle(bundle_id, self._permission_id(token))

    @_unit_of_work
    def remove_from_bundle(self, bundle: str, *tokens: str, reason: str | None = None) -> None:
        """Take permissions out of a bundle."""
        bp = self.models.bundle_permissions
        tokens = _tokens(tokens)
        with self._change("remove from bundle", bundle, ",".join(tokens), reason=reason):
            bundle_id = self._id("bundle", bundle)
            ids = [self._permission_id(t) for t in tokens]
            self.session.execute(
                sa.delete(bp).where(bp.c.bundle_id == bundle_id, bp.c.permission_id.in_(ids))
            )

    # -- grants -------------------------------------------------------------------------------
    @_unit_of_work
    def grant(
        self,
        holder: Any,
        *,
        permission: str | None = None,
        bundle: str | None = None,
        group: str | None = None,
        scope: Scope = None,
        valid_from: datetime | None = None,
        expires_at: datetime | None = None,
        reason: str | None = None,
    ) -> None:
        """Grant a permission, a bundle, or (to a user) membership of a group, to ``holder`` (a
        user instance, or a group label). Granting again updates the validity window."""
        scope_type, scope_id = scope_of(scope)
        window = {"valid_from": _utc(valid_from), "expires_at": _utc(expires_at)}
        # Fix: the unit of work starts before the first query. Looking the edge up first opened
        # the session's transaction, so the change never ran (and committed) on its own.
        with self._change("grant", "", "", _scope_text(scope_type, scope_id), reason) as audit:
            table, left, right_column, right_id, what = self._edge(
                holder, permission, bundle, group
            )
            audit.update(subject=_fit(_describe(holder), 255), object=_fit(what, 255))
            values = {left[0]: left[1], right_column: right_id, **window}
            values.update(scope_type=scope_type, scope_id=scope_id)
            self._upsert(table, values, ("valid_from", "expires_at"))

    @_unit_of_work
    def revoke(
        self,
        holder: Any,
        *,
        permission: str | None = None,
        bundle: str | None = None,
        group: str | None = None,
        scope: Scope = None,
        reason: str | None = None,
    ) -> None:
        """Remove a grant (in exactly that scope). Revoking what is not granted does nothing."""
        scope_type, scope_id = scope_of(scope)
        with self._change("revoke", "", "", _scope_text(scope_type, scope_id), reason) as audit:
            table, left, right_column, right_id, what = self._edge(
                holder, permission, bundle, group
            )
            audit.update(subject=_fit(_describe(holder), 255), object=_fit(what, 255))
            self.session.execute(
                sa.delete(table).where(
                    table.c[left[0]] == left[1],
                    table.c[right_column] == right_id,
                    table.c.scope_type == scope_type,
                    table.c.scope_id == scope_id,
                )
            )

    @_unit_of_work
    def revoke_scope(self, scope: Scope, *, reason: str | None = None) -> int:
        """Remove every grant in exactly ``scope`` (an object, or ``("org", 7)``), whoever
        holds it and whatever its tier: users' permissions, bundles and group memberships, and
        groups' permissions and bundles. Returns how many grants went (one audit row).

        A grant on one object is stored as the object's type and key, and outlives the object:
        delete the object's grants with it (``revoke_scope(doc)`` then ``session.delete(doc)``),
        or a new object that reuses the key (SQLite reuses the largest integer key after its
        row is deleted) inherits them. The global scope (None) is refused."""
        scope_type, scope_id = scope_of(scope)
        if not scope_type:
            raise InvalidArgument(
                "revoke_scope() removes the grants of one scope: an object or (type, id), not "
                "the global scope (None)"
            )
        text = _scope_text(scope_type, scope_id)
        with self._change("revoke_scope", "every holder", "", text, reason) as audit:
            m = self.models
            tables = [m.group_permissions, m.group_bundles] + [
                table
                for links in m.users.values()
                for table in (links.permissions, links.bundles, links.groups)
            ]
            removed = 0
            for table in tables:
                where = (table.c.scope_type == scope_type, table.c.scope_id == scope_id)
                result = self.session.execute(sa.delete(table).where(*where))
                removed += int(getattr(result, "rowcount", 0) or 0)
            audit.update(object=f"{removed} grant(s)")
        return removed

    def add_member(self, group: str, user: Any, **kwargs: Any) -> None:
        """Put ``user`` in ``group`` (a grant of the group: ``scope=``, ``expires_at=`` ...)."""
        self.grant(user, group=group, **kwargs)

    def remove_member(self, group: str, user: Any, **kwargs: Any) -> None:
        """Take ``user`` out of ``group``."""
        self.revoke(user, group=group, **kwargs)

    # -- reading ------------------------------------------------------------------------------
    def effective_permissions(self, user: Any) -> list[tuple[str, tuple[str, str], str]]:
        """``(token, (scope_type, scope_id), tier)`` for every grant of ``user`` valid now;
        ``tier`` is ``direct``, ``bundle``, ``group`` or ``group bundle``."""
        paths = grant_paths(self.session, self.models, user)
        return sorted({(t, (st, sid), tier) for t, st, sid, tier, _ in paths})

    def audit_log(self, limit: int = 100) -> list[Any]:
        """The latest audit rows, newest first."""
        audit = self.models.audit
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        return list(self.session.execute(query).all())

    # -- helpers ------------------------------------------------------------------------------
    def _kind(self, kind: str) -> tuple[Any, str]:
        kinds = {
            "permission": (self.models.Permission, "token"),
            "bundle": (self.models.Bundle, "label"),
            "group": (self.models.Group, "label"),
        }
        if kind not in kinds:
            raise InvalidArgument(f"kind is 'permission', 'bundle' or 'group', not {kind!r}")
        return kinds[kind]

    def _id(self, kind: str, name: str) -> int:
        cls, column = self._kind(kind)
        if not isinstance(name, str):
            raise InvalidArgument(f"a {kind} is named by a string, got {name!r}")
        row_id = self.session.scalar(sa.select(cls.id).where(getattr(cls, column) == name))
        if row_id is None:
            raise _missing(kind, name)
        return int(row_id)

    def _exists(self, kind: str, name: str) -> bool:
        cls, column = self._kind(kind)
        found = self.session.scalar(sa.select(cls.id).where(getattr(cls, column) == name))
        return found is not None

    def _insert(self, kind: str, name: str, row: Any) -> None:
        # Fix: a duplicate name raised SQLAlchemy's IntegrityError (not a BastionError). Checked
        # first; a concurrent insert of the same name still fails on the unique index.
        if self._exists(kind, name):
            raise DuplicateName(kind, name, "already exists")
        self.session.add(row)
        try:
            self.session.flush()
        except sa.exc.IntegrityError as error:  # created by a concurrent transaction meanwhile
            raise DuplicateName(kind, name, "already exists") from error

    def _permission_id(self, token: str) -> int:
        return self._id("permission", token)

    def _link_bundle(self, bundle_id: int, permission_id: int) -> None:
        self._upsert(
            self.models.bundle_permissions,
            {"bundle_id": bundle_id, "permission_id": permission_id},
            (),
        )

    def _delete_links(self, kind: str, row_id: int) -> None:
        # ON DELETE CASCADE does the same in the database; SQLite enforces foreign keys only
        # when the application turned them on, so the store does not rely on it.
        m = self.models
        tables: dict[str, list[tuple[sa.Table, str]]] = {
            "permission": [
                (m.bundle_permissions, "permission_id"),
                (m.group_permissions, "permission_id"),
            ]
            + [(links.permissions, "permission_id") for links in m.users.values()],
            "bundle": [(m.bundle_permissions, "bundle_id"), (m.group_bundles, "bundle_id")]
            + [(links.bundles, "bundle_id") for links in m.users.values()],
            "group": [(m.group_permissions, "group_id"), (m.group_bundles, "group_id")]
            + [(links.groups, "group_id") for links in m.users.values()],
        }
        for table, column in tables[kind]:
            self.session.execute(sa.delete(table).where(table.c[column] == row_id))

    def _edge(
        self, holder: Any, permission: str | None, bundle: str | None, group: str | None
    ) -> tuple[sa.Table, tuple[str, Any], str, int, str]:
        chosen = [
            (k, v)
            for k, v in (("permission", permission), ("bundle", bundle), ("group", group))
            if v is not None
        ]
        if len(chosen) != 1:
            raise InvalidArgument("grant exactly one of permission=, bundle=, group=")
        kind, name = chosen[0]
        right_id = self._id(kind, name)
        column = f"{kind}_id"
        if isinstance(holder, str):  # a group label
            if kind == "group":
                raise InvalidArgument("groups hold permissions and bundles, not other groups")
            table = (
                self.models.group_permissions if kind == "permission" else self.models.group_bundles
            )
            return (
                table,
                ("group_id", self._id("group", holder)),
                column,
                right_id,
                f"{kind} {name}",
            )
        links, user_id = self._user(holder)
        table = {"permission": links.permissions, "bundle": links.bundles, "group": links.groups}[
            kind
        ]
        return table, ("user_id", user_id), column, right_id, f"{kind} {name}"

    def _user(self, user: Any) -> tuple[UserLinks, Any]:
        links = self.models.links_for(type(user))
        if links is None:
            raise InvalidArgument(
                f"{type(user).__name__} holds no grants: register it with register_user()"
            )
        state = sa_inspect(user)
        if state.key is None:
            self.session.flush()
        if state.key is None:
            raise InvalidArgument(f"{user!r} is not persistent: add it to the session first")
        key = state.mapper.get_property_by_column(links.pk).key
        return links, state.attrs[key].value

    def _upsert(self, table: sa.Table, values: dict[str, Any], update: tuple[str, ...]) -> None:
        dialect = self.session.get_bind().dialect.name
        if dialect not in ("postgresql", "sqlite"):
            # Portable fallback: delete then insert, inside the same unit of work.
            key = {c.name: values[c.name] for c in table.primary_key}
            self.session.execute(sa.delete(table).where(*(table.c[k] == v for k, v in key.items())))
            self.session.execute(sa.insert(table).values(values))
            return
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(table).values(values)
        keys = [c.name for c in table.primary_key]
        if update:
            statement = statement.on_conflict_do_update(
                index_elements=keys, set_={k: statement.excluded[k] for k in update}
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        self.session.execute(statement)


def _begin_sqlite(session: Session) -> None:
    """Fix: pysqlite (legacy transaction control, the default before Python 3.12) opens a database
    transaction only before INSERT/UPDATE/DELETE. In a session that has only read so far, the
    store's SAVEPOINT opened the database transaction itself and its RELEASE committed it: the
    change was committed at once, and the caller's rollback did not undo it. Open it first."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    raw: Any = connection.connection.dbapi_connection
    legacy = getattr(raw, "isolation_level", None) is not None  # None: the driver autocommits
    if legacy and getattr(raw, "in_transaction", True) is False:
        connection.exec_driver_sql("BEGIN")


def scope_of(scope: Scope) -> tuple[str, str]:
    """``(scope_type, scope_id)`` for ``None``, ``("org", 42)`` or a mapped instance."""
    if scope is None:
        return GLOBAL
    if isinstance(scope, tuple) and len(scope) == 2 and isinstance(scope[0], str):
        if not scope[0] or len(scope[0]) > 64 or not scope[0].isprintable():
            raise InvalidArgument(f"invalid scope type {scope[0]!r}")
        key = scope_key(scope[1])
        # Fix: an id the column cannot hold (over 255 characters: PostgreSQL raised DataError)
        # or that no row can have (empty, control characters) was stored as given
        if not key or len(key) > 255 or not key.isprintable():
            raise InvalidArgument(f"invalid scope id {scope[1]!r} (1-255 printable characters)")
        return scope[0], key
    state = sa_inspect(scope, raiseerr=False)
    # (fix: a mapped class or an attribute inspects to a Mapper or itself: AttributeError)
    if not isinstance(state, InstanceState) or state.key is None or len(state.key[1]) != 1:
        raise InvalidArgument(
            f"scope= takes None, (type, id) or a persistent object with one primary key; "
            f"got {scope!r}"
        )
    return object_scope_type(state.mapper), scope_key(state.key[1][0])


def _utc(value: datetime | None) -> datetime | None:
    """Times are stored as naive UTC (compared with the database clock in UTC)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgument(f"expected a datetime, got {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _tokens(tokens: Any) -> tuple[str, ...]:
    """Permission tokens given as a list (fix: anything else, or a token that is not a string,
    raised TypeError from the audit row's ``",".join`` before any check)."""
    try:
        if isinstance(tokens, (str, bytes)):
            raise TypeError
        found = tuple(tokens)  # (a generator was used up by the audit row: nothing was linked)
    except TypeError:
        raise InvalidArgument(
            f"permission tokens are given as a list of strings, got {tokens!r}"
        ) from None
    for token in found:
        if not isinstance(token, str):
            raise InvalidArgument(f"a stored permission token is a string, got {token!r}")
    return found


def _token(token: object) -> None:
    if not isinstance(token, str):
        raise InvalidArgument(f"a stored permission token is a string, got {token!r}")
    validate_permission_name(token)


#: Refused in labels (fix: were accepted), like quotes and ``;`` in permission names: labels end
#: up in logs, audit rows, URLs and CLI arguments.
_LABEL_FORBIDDEN = frozenset("'\"`;\\")


def _label(label: object) -> None:
    if not isinstance(label, str) or not label.strip() or len(label) > 255:
        raise InvalidName("label", label, "use 1-255 characters")
    if not label.isprintable():
        raise InvalidName("label", label, "control characters are not allowed")
    if _LABEL_FORBIDDEN.intersection(label):
        raise InvalidName("label", label, "quotes, backquotes, ';' and '\\' are not allowed")


def _missing(kind: str, name: str) -> Exception:
    if kind == "permission":
        return PermissionNotFound(name)
    return InvalidArgument(f"no {kind} named {name!r}")


def _describe(holder: Any) -> str:
    if isinstance(holder, str):
        return f"group {holder}"
    state = sa_inspect(holder, raiseerr=False)
    if state is not None and state.key is not None:
        return f"{type(holder).__name__} {','.join(map(str, state.key[1]))}"
    return repr(holder)[:255]


def _fit(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters (an audit column's size), marked with ``…``."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scope_text(scope_type: str, scope_id: str) -> str:
    return "" if not scope_type else f"{scope_type}:{scope_id}"
