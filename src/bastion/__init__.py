"""bastion: one authorization policy, compiled to an in-process check and a SQL filter.

The public API is exactly the names listed below (guarded by ``tests/test_public_api.py``);
everything else is internal.
"""

from bastion.authorizer import Authorizer
from bastion.enforcement import UnauthorizedLoad, enforcement, install_enforcement, unrestricted
from bastion.errors import (
    BastionError,
    DuplicateName,
    DuplicateRule,
    InvalidArgument,
    InvalidName,
    MissingContext,
    NotAuthorized,
    PermissionNotFound,
    PolicyError,
    RoleNotFound,
    RuleNotTranslatable,
    UnknownAttribute,
    UnmappedClass,
    UnusedPermission,
)
from bastion.policy import ALL_PERMISSIONS, Plan, Policy, RegisteredRule
from bastion.roles import Permission, Role, RoleGrant, RolePolicy
from bastion.rules import ALLOW, DENY, UNKNOWN, Rule, ancestors, ctx, it, subject, target
from bastion.sessions import (
    authorize_queries,
    authorized_async_sessionmaker,
    authorized_sessionmaker,
)

__version__ = "0.1.0"

__all__ = [
    "ALLOW",
    "ALL_PERMISSIONS",
    "DENY",
    "UNKNOWN",
    "Authorizer",
    "BastionError",
    "DuplicateName",
    "DuplicateRule",
    "InvalidArgument",
    "InvalidName",
    "MissingContext",
    "NotAuthorized",
    "Permission",
    "PermissionNotFound",
    "Plan",
    "Policy",
    "PolicyError",
    "RegisteredRule",
    "Role",
    "RoleGrant",
    "RoleNotFound",
    "RolePolicy",
    "Rule",
    "RuleNotTranslatable",
    "UnauthorizedLoad",
    "UnknownAttribute",
    "UnmappedClass",
    "UnusedPermission",
    "ancestors",
    "authorize_queries",
    "authorized_async_sessionmaker",
    "authorized_sessionmaker",
    "ctx",
    "enforcement",
    "install_enforcement",
    "it",
    "subject",
    "target",
    "unrestricted",
]
