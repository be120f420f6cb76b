"""The W2/W3 policy written with bastion (imported lazily: the library may be absent)."""

from __future__ import annotations

from typing import Any

from _common import Document, User


def bastion_policy() -> Any:
    """read = public, owner or member of the doc's org; edit = owner or admin of the doc's org."""
    from bastion import Policy, it, subject, target

    policy = Policy()
    policy.declare("read", "edit")
    policy.allow(
        "read",
        subject=User,
        target=Document,
        when=target.is_public
        | (target.owner_id == subject.id)
        | subject.memberships.any(it.org_id == target.org_id),
    )
    policy.allow(
        "edit",
        subject=User,
        target=Document,
        when=(target.owner_id == subject.id)
        | subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin")),
    )
    return policy


def bastion_authorizer(session: Any) -> Any:
    from bastion import Authorizer

    return Authorizer(bastion_policy(), session)


def bastion_status() -> str | None:
    """None when bastion's public API is importable, else the reason it is not."""
    try:
        import bastion

        bastion.Authorizer  # noqa: B018 - the attribute is what we probe
        bastion.Policy  # noqa: B018
    except Exception as exc:  # noqa: BLE001 - report whatever broke the import
        return f"{type(exc).__name__}: {exc}"
    return None
