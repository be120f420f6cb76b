"""bastion: one authorization policy, compiled to an in-process check and a SQL filter.

The public API is exactly ``__all__`` below (guarded by ``tests/test_public_api.py``); everything
else is internal.
"""

from bastion.authorizer import Authorizer
from bastion.errors import (
    BastionError,
    DuplicateRule,
    InvalidArgument,
    InvalidName,
    MissingContext,
    NotAuthorized,
    PermissionNotFound,
    PolicyError,
    RuleNotTranslatable,
    UnknownAttribute,
    UnmappedClass,
)
from bastion.policy import ALL_PERMISSIONS, Plan, Policy, RegisteredRule
from bastion.rules import ALLOW, DENY, UNKNOWN, Rule, ctx, it, subject, target

__version__ = "0.1.0"

__all__ = [
    "ALLOW",
    "ALL_PERMISSIONS",
    "DENY",
    "UNKNOWN",
    "Authorizer",
    "BastionError",
    "DuplicateRule",
    "InvalidArgument",
    "InvalidName",
    "MissingContext",
    "NotAuthorized",
    "PermissionNotFound",
    "Plan",
    "Policy",
    "PolicyError",
    "RegisteredRule",
    "Rule",
    "RuleNotTranslatable",
    "UnknownAttribute",
    "UnmappedClass",
    "ctx",
    "it",
    "subject",
    "target",
]
