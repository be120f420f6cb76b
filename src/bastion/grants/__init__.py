"""Stored three-tier grants (KegBouncer lineage): users, permissions, bundles and groups in the
application's own database, compiled into the rule algebra by :class:`HasGrant`.

::

    grants = grant_models(Base)  # tables and classes on your declarative base
    grants.register_user(User)  # link tables for each user model
    store = GrantStore(session, grants, actor="admin")
    store.create_permission("doc.read")
    store.grant(alice, permission="doc.read", scope=("org", 7), expires_at=...)
    policy.allow(
        "doc.read",
        subject=User,
        target=Document,
        when=holds(grants, "doc.read", scope=("org", target.org_id)),
    )
"""

from bastion.grants.effective import EffectiveGrants, effective_grants, forget_grants
from bastion.grants.models import (
    GLOBAL,
    GrantModels,
    GrantsUserMixin,
    UserLinks,
    grant_models,
    scope_key,
)
from bastion.grants.rules import SESSION_KEY, HasGrant, utcnow
from bastion.grants.rules import holds_rule as holds
from bastion.grants.store import RETRIES, GrantConflict, GrantStore, scope_of

__all__ = [
    "GLOBAL",
    "RETRIES",
    "SESSION_KEY",
    "EffectiveGrants",
    "GrantConflict",
    "GrantModels",
    "GrantStore",
    "GrantsUserMixin",
    "HasGrant",
    "UserLinks",
    "effective_grants",
    "forget_grants",
    "grant_models",
    "holds",
    "scope_key",
    "scope_of",
    "utcnow",
]
