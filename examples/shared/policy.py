"""The examples' policy: the three ways to grant, combined.

* **rules**: a public document is readable; the owner reads and edits; staff view reports;
* **roles** in code: a member's role in the document's organisation (``viewer``, ``editor``,
  ``admin``) grants what the role holds;
* **stored grants** in the database (``bastion.grants``): a permission held globally
  (``reports.view``, ``grants.audit``) or in one organisation (``doc.read`` in ``("org", id)``).
"""

from __future__ import annotations

from bastion import Policy, Role, RolePolicy, it, subject, target
from bastion.grants import holds

from .models import Document, User, grants

__all__ = ["PERMISSIONS", "org_roles", "policy"]

#: every permission of the examples
PERMISSIONS = ("doc.read", "doc.edit", "doc.delete", "reports.view", "grants.audit")

#: a member's role in an organisation, declared in code
org_roles = RolePolicy(
    [
        Role("viewer", ["doc.read"]),
        Role("editor", ["doc.read", "doc.edit"]),
        Role("admin", ["doc.read", "doc.edit", "doc.delete"]),
    ],
    name="organisation roles",
)


def role_in_org_grants(permission: str) -> object:
    """The subject's role in the document's organisation holds ``permission``."""
    return subject.memberships.any(
        (it.org_id == target.org_id) & org_roles.grants(it.role, permission)
    )


policy = Policy(list(PERMISSIONS), name="examples")
policy.declare("doc.read", "doc.edit", who_can=True)  # who_can() must answer for these
policy.allow(
    "doc.read",
    subject=User,
    target=Document,
    when=target.is_public
    | (target.owner == subject)
    | role_in_org_grants("doc.read")
    | holds(grants, "doc.read", scope=("org", target.org_id)),
    name="public, own, by role, or granted in its organisation",
)
policy.allow(
    "doc.edit",
    subject=User,
    target=Document,
    when=(target.owner == subject) | role_in_org_grants("doc.edit"),
    name="own, or by role",
)
policy.allow(
    "doc.delete", subject=User, target=Document, when=role_in_org_grants("doc.delete"), name="role"
)
policy.allow(
    "reports.view",
    subject=User,
    when=subject.is_staff | holds(grants, "reports.view"),
    name="staff, or granted",
)
policy.allow("grants.audit", subject=User, when=holds(grants, "grants.audit"), name="granted")
