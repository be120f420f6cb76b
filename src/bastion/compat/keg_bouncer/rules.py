"""``holds(token)``: KegBouncer permissions as a bastion rule.

``policy.allow("missiles.launch", subject=User, when=holds("launch-missiles"))`` allows a user
that holds the KegBouncer permission ``launch-missiles`` through its user groups (directly in a
group, or through a group's bundle), combined with any other rule (``holds("doc.edit") |
(target.owner == subject)``).

Python: a set lookup in ``user.get_all_permissions()`` (cached until the session changes). SQL::

    EXISTS (SELECT 1 FROM keg_bouncer_user_user_group_map m
            JOIN keg_bouncer_user_group_permission_map gp ON gp.user_group_id = m.user_group_id
            JOIN keg_bouncer_permissions p ON p.id = gp.permission_id
            WHERE m.user_id = :user_id AND p.token = :token)
    OR EXISTS (SELECT 1 FROM keg_bouncer_user_user_group_map m
               JOIN keg_bouncer_user_group_bundle_map gb ON ...
               JOIN keg_bouncer_bundle_permission_map bp ON ...
               JOIN keg_bouncer_permissions p ON p.id = bp.permission_id
               WHERE m.user_id = :user_id AND p.token = :token)

Never correlated with the query it is put in (filtering ``Permission`` or ``UserGroup`` rows is
safe). Two-valued; a subject that is not a persistent user of a class mixing in ``UserMixin``
holds nothing, on both paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect

from bastion.compat.keg_bouncer.model.entities import entities_for
from bastion.compat.keg_bouncer.model.mixins import UserMixin
from bastion.errors import InvalidArgument, RuleNotTranslatable
from bastion.rules.nodes import Rule
from bastion.rules.to_python import Predicate, register_python
from bastion.rules.to_sql import SqlEnv, SqlValue, register_sql

__all__ = ["HoldsPermission", "holds"]


@dataclass(frozen=True, slots=True)
class HoldsPermission(Rule):
    """The subject (a ``UserMixin`` user) holds the KegBouncer permission ``token``."""

    token: str

    def reads_subject_identity(self) -> bool:
        return True  # the SQL is looked up by the subject's key

    def __str__(self) -> str:
        return f"keg_bouncer.holds({self.token!r})"


def holds(token: str) -> HoldsPermission:
    """The rule "the subject holds KegBouncer permission ``token``"."""
    if not isinstance(token, str) or not token:
        raise InvalidArgument(f"a permission token is a non-empty string, got {token!r}")
    return HoldsPermission(token)


def _user_key(subject: Any) -> Any:
    """The subject's value of its link column, or None (not a stored user)."""
    if not isinstance(subject, UserMixin):
        return None
    state = sa_inspect(subject, raiseerr=False)
    if state is None or state.key is None:
        return None
    return getattr(subject, type(subject)._keg_bouncer_user_key)  # type: ignore[attr-defined]


@register_python(HoldsPermission)
def _holds_python(node: HoldsPermission) -> Predicate:
    token = node.token

    def pred(s: Any, t: Any, c: Mapping[str, Any], i: Any) -> bool:
        return _user_key(s) is not None and token in s.permission_tokens()

    return pred


@register_sql(HoldsPermission)
def _holds_sql(node: HoldsPermission, env: SqlEnv) -> SqlValue:
    if env.symbolic:
        subject_type = env.subject_type
        if not (isinstance(subject_type, type) and issubclass(subject_type, UserMixin)):
            raise RuleNotTranslatable(
                node, f"the subject type {subject_type!r} does not mix in KegBouncer's UserMixin"
            )
        return True
    user_id = _user_key(env.subject)
    if user_id is None:
        return False
    cls = type(env.subject)
    ents = entities_for(cls)
    link = cls.user_user_group_map
    p = ents.Permission.__table__
    gp, gb, bp = (
        ents.user_group_permission_map,
        ents.user_group_bundle_map,
        ents.bundle_permission_map,
    )
    where = (link.c.user_id == user_id, p.c.token == node.token)
    direct = (
        sa.select(sa.literal(1))
        .select_from(
            link.join(gp, gp.c.user_group_id == link.c.user_group_id).join(
                p, p.c.id == gp.c.permission_id
            )
        )
        .where(*where)
    )
    bundled = (
        sa.select(sa.literal(1))
        .select_from(
            link.join(gb, gb.c.user_group_id == link.c.user_group_id)
            .join(bp, bp.c.permission_bundle_id == gb.c.permission_bundle_id)
            .join(p, p.c.id == bp.c.permission_id)
        )
        .where(*where)
    )
    # never correlate: the query may select from these very tables
    return sa.or_(direct.correlate(None).exists(), bundled.correlate(None).exists())
