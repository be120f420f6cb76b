"""bastion.policy: declaring permissions, registering rules (fail closed), looking rules up."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from typing import Any

import pytest

from _unit_models import Admin, Document, Invoice, Org, Principal, Unmapped, User
from bastion import (
    ALL_PERMISSIONS,
    ALLOW,
    DENY,
    DuplicateRule,
    InvalidArgument,
    InvalidName,
    PermissionNotFound,
    Plan,
    Policy,
    PolicyError,
    RegisteredRule,
    RuleNotTranslatable,
    UnknownAttribute,
    UnmappedClass,
    ctx,
    it,
    subject,
    target,
)
from bastion.rules import as_rule
from bastion.rules.nodes import Compare, Literal, Or

PUBLIC = target.is_public
OWNER = target.owner_id == subject.id


def allowed(policy: Policy, who: Any, permission: Any, what: Any = None, **context: Any) -> bool:
    """The Python answer of the policy (what Authorizer.check does on loaded objects)."""
    plan = policy.plan(permission, type(who), None if what is None else type(what))
    return plan.predicate(who, what, context, None) is True


# -- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["read", "doc.read", "doc:edit", "api/v1/items-list", "_private", "1st", "a" * 200, "A.b_C"],
)
def test_valid_permission_names(name: str) -> None:
    assert Policy([name]).permissions == (name,)


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "doc read",
        "doc.read ",
        "doc'read",
        'doc"read',
        "doc;read",
        "read; DROP TABLE documents; --",
        "doc\tread",
        "doc\nread",
        "read\n",
        "doc\x00read",
        "doc\x1bread",
        "-read",
        ".read",
        "/read",
        "a" * 201,
        "lesé",
        "doc(read)",
        "doc*",
    ],
    ids=repr,
)
def test_invalid_permission_names(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        Policy([name])
    assert info.value.kind == "permission"
    assert info.value.name == name
    policy = Policy(["ok"])
    with pytest.raises(InvalidName):
        policy.declare("fine", name)
    assert policy.permissions == ("ok",)  # all validated before any is added


@pytest.mark.parametrize(
    "permission", [None, True, False, 1.5, ["read"], {"read": 1}, {"read"}], ids=repr
)
def test_non_permissions_are_invalid_arguments(permission: Any) -> None:
    with pytest.raises(InvalidArgument):
        Policy([permission])
    policy = Policy(["ok"])
    with pytest.raises(InvalidArgument):
        policy.declare("fine", permission)
    assert policy.permissions == ("ok",)


@pytest.mark.parametrize("permission", [["read"], {"read": 1}], ids=repr)
def test_unhashable_permission_in_a_call_is_an_invalid_argument(permission: Any) -> None:
    policy = Policy(["read"])
    with pytest.raises(InvalidArgument):
        policy.allow(permission, subject=User, target=Document)
    with pytest.raises(InvalidArgument):
        policy.plan(permission, User, Document)
    assert policy.rules() == ()


def test_declare_is_idempotent_and_ordered() -> None:
    policy = Policy(["b", "a"])
    policy.declare("c", "a", "b")
    assert policy.permissions == ("b", "a", "c")


def test_require_permission() -> None:
    policy = Policy(["read"])
    assert policy.require_permission("read") == "read"
    with pytest.raises(PermissionNotFound) as info:
        policy.require_permission("raed")
    assert info.value.permission == "raed"
    assert info.value.known == ("read",)
    assert isinstance(info.value, LookupError)


class Perm(enum.Enum):
    READ = "read"
    EDIT = "edit"


class StrPerm(str, enum.Enum):
    READ = "doc.read"


def test_enum_permissions() -> None:
    policy = Policy(Perm)
    assert policy.permissions == (Perm.READ, Perm.EDIT)
    policy.allow(Perm.READ, subject=User, target=Document, when=PUBLIC)
    assert allowed(policy, User(id=1), Perm.READ, Document(is_public=True))
    assert not allowed(policy, User(id=1), Perm.EDIT, Document(is_public=True))
    with pytest.raises(PermissionNotFound):
        policy.plan("read", User, Document)  # the value is not the member


def test_str_enum_permissions_are_validated_as_names() -> None:
    policy = Policy(StrPerm)
    policy.allow(StrPerm.READ, subject=User, target=Document, when=PUBLIC)
    assert allowed(policy, User(id=1), StrPerm.READ, Document(is_public=True))

    class Bad(str, enum.Enum):
        SPACE = "doc read"

    with pytest.raises(InvalidName):
        Policy(Bad)


# -- registration errors: each leaves the policy as it was ----------------------------------


def _registered(policy: Policy) -> tuple[RegisteredRule, ...]:
    return policy.rules()


@pytest.fixture
def policy() -> Policy:
    policy = Policy(["read", "edit"])
    policy.allow("read", subject=User, target=Document, when=PUBLIC, name="public")
    return policy


REGISTRATION_ERRORS: list[tuple[str, type[Exception], Callable[[Policy], object]]] = [
    (
        "unknown permission",
        PermissionNotFound,
        lambda p: p.allow("raed", subject=User, target=Document),
    ),
    (
        "one unknown permission among known ones",
        PermissionNotFound,
        lambda p: p.allow("edit", "raed", subject=User, target=Document),
    ),
    ("subject is an instance", InvalidArgument, lambda p: p.allow("read", subject=User())),  # type: ignore[arg-type]
    ("subject is a string", InvalidArgument, lambda p: p.allow("read", subject="User")),  # type: ignore[arg-type]
    ("subject is None", InvalidArgument, lambda p: p.allow("read", subject=None)),  # type: ignore[arg-type]
    (
        "target is unmapped",
        UnmappedClass,
        lambda p: p.allow("read", subject=User, target=Unmapped),
    ),
    ("target is a builtin", UnmappedClass, lambda p: p.allow("read", subject=User, target=int)),
    (
        "target is an instance",
        InvalidArgument,
        lambda p: p.allow("read", subject=User, target=Document()),  # type: ignore[arg-type]
    ),
    (
        "no permission and no target",
        InvalidArgument,
        lambda p: p.allow(subject=User, when=subject.is_admin),
    ),
    (
        "missing attribute",
        UnknownAttribute,
        lambda p: p.allow("read", subject=User, target=Document, when=target.colour == "x"),
    ),
    (
        "missing subject attribute",
        UnknownAttribute,
        lambda p: p.allow("read", subject=User, target=Document, when=subject.colour == "x"),
    ),
    (
        "relationship used as a value",
        UnknownAttribute,
        lambda p: p.allow("read", subject=User, target=Document, when=target.owner == 1),
    ),
    (
        "column used with any()",
        UnknownAttribute,
        lambda p: p.allow("read", subject=User, target=Document, when=target.title.any()),
    ),
    (
        "it outside any()/has()",
        RuleNotTranslatable,
        lambda p: p.allow("read", subject=User, target=Document, when=it.name == "x"),
    ),
    (
        "literal of the wrong type",
        RuleNotTranslatable,
        lambda p: p.allow("read", subject=User, target=Document, when=target.level == "high"),
    ),
    (
        "a lambda",
        RuleNotTranslatable,
        lambda p: p.allow("read", subject=User, target=Document, when=lambda u, d: True),
    ),
    (
        "a function",
        RuleNotTranslatable,
        lambda p: p.allow("read", subject=User, target=Document, when=print),
    ),
    (
        "not a rule",
        RuleNotTranslatable,
        lambda p: p.allow("read", subject=User, target=Document, when="target.is_public"),
    ),
    (
        "ordering comparison with None",
        RuleNotTranslatable,
        lambda p: p.allow(
            "read",
            subject=User,
            target=Document,
            when=Compare(target.level.node, "<", Literal(None)),
        ),
    ),
    (
        "target in a rule without target",
        RuleNotTranslatable,
        lambda p: p.allow("read", subject=User, when=target.is_public),
    ),
    (
        "subject relationship of an unmapped subject",
        RuleNotTranslatable,
        lambda p: p.allow(
            "read", subject=Principal, target=Document, when=subject.memberships.any()
        ),
    ),
    (
        "relationship is subject with any subject",
        RuleNotTranslatable,
        lambda p: p.allow("read", target=Document, when=target.owner == subject),
    ),
    (
        "duplicate rule (same default name)",
        DuplicateRule,
        lambda p: p.allow("read", subject=User, target=Document, when=PUBLIC, name="public"),
    ),
    ("empty rule name", InvalidName, lambda p: p.allow("read", subject=User, name="")),
    ("blank rule name", InvalidName, lambda p: p.allow("read", subject=User, name="   ")),
    ("rule name with newline", InvalidName, lambda p: p.allow("read", subject=User, name="a\nb")),
    ("long rule name", InvalidName, lambda p: p.allow("read", subject=User, name="x" * 201)),
    ("rule name not a str", InvalidName, lambda p: p.allow("read", subject=User, name=3)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("error", "register"),
    [(e, r) for _, e, r in REGISTRATION_ERRORS],
    ids=[n for n, _, _ in REGISTRATION_ERRORS],
)
def test_registration_error_changes_nothing(
    policy: Policy, error: type[Exception], register: Callable[[Policy], object]
) -> None:
    before = _registered(policy)
    plan = policy.plan("read", User, Document)
    with pytest.raises(error):
        register(policy)
    assert _registered(policy) == before
    assert policy.plan("read", User, Document) is plan  # not even the plan cache was touched


def test_registration_errors_are_policy_errors_or_invalid_arguments() -> None:
    for _, error, _ in REGISTRATION_ERRORS:
        assert issubclass(error, (PolicyError, InvalidArgument))


def test_duplicate_rule_carries_its_key(policy: Policy) -> None:
    with pytest.raises(DuplicateRule) as info:
        policy.allow("read", subject=User, target=Document, when=OWNER, name="public")
    assert info.value.key == ("read", User, Document)
    assert info.value.name == "public"


def test_duplicate_default_name_is_the_rule_text() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Document, when=target.is_public)
    with pytest.raises(DuplicateRule) as info:
        policy.allow("read", subject=User, target=Document, when=target.is_public)
    assert info.value.name == "(target.is_public == True)"


def test_duplicate_among_several_permissions_registers_none() -> None:
    policy = Policy(["read", "edit"])
    policy.allow("edit", subject=User, target=Document, when=OWNER, name="owner")
    with pytest.raises(DuplicateRule):
        policy.allow("read", "edit", subject=User, target=Document, when=OWNER, name="owner")
    assert [r.permission for r in policy.rules()] == ["edit"]


def test_the_same_permission_twice_registers_one_rule() -> None:
    policy = Policy(["read"])
    with contextlib.suppress(DuplicateRule):  # refusing is as good as de-duplicating
        policy.allow("read", "read", subject=User, target=Document, when=PUBLIC)
    assert len(policy.rules()) <= 1


def test_replace_true_replaces(policy: Policy) -> None:
    [record] = policy.allow(
        "read", subject=User, target=Document, when=OWNER, name="public", replace=True
    )
    assert policy.rules() == (record,)
    assert record.rule == as_rule(OWNER)
    assert not allowed(policy, User(id=1), "read", Document(is_public=True, owner_id=2))
    assert allowed(policy, User(id=1), "read", Document(is_public=False, owner_id=1))


def test_replace_true_without_a_clash_just_adds(policy: Policy) -> None:
    policy.allow("read", subject=User, target=Document, when=OWNER, name="owner", replace=True)
    assert [r.name for r in policy.rules()] == ["public", "owner"]


def test_same_name_for_another_key_is_no_duplicate(policy: Policy) -> None:
    policy.allow("edit", subject=User, target=Document, when=PUBLIC, name="public")
    policy.allow("read", subject=Admin, target=Document, when=PUBLIC, name="public")
    policy.allow("read", subject=User, target=Invoice, when=PUBLIC, name="public")
    assert len(policy.rules()) == 4


def test_allow_returns_one_record_per_permission() -> None:
    policy = Policy(["read", "edit"])
    records = policy.allow("read", "edit", subject=User, target=Document, when=OWNER, name="own")
    assert [r.permission for r in records] == ["read", "edit"]
    for record in records:
        assert isinstance(record, RegisteredRule)
        assert (record.subject_type, record.target_type, record.name) == (User, Document, "own")
        assert record.rule == as_rule(OWNER)
    assert str(records[0]) == (
        "'own': User may 'read' on Document if (target.owner_id == subject.id)"
    )


def test_default_rule_is_allow_and_default_subject_is_anyone() -> None:
    policy = Policy(["read"])
    [record] = policy.allow("read", target=Document)
    assert record.rule is ALLOW
    assert record.subject_type is object
    assert allowed(policy, Principal(), "read", Document())
    assert allowed(policy, None, "read", Document())


def test_check_only_accepts_a_python_callable() -> None:
    policy = Policy(["read"])
    policy.allow(
        "read",
        subject=User,
        target=Document,
        when=lambda user, doc: doc.title.startswith(user.name),
        check_only=True,
    )
    assert allowed(policy, User(name="al"), "read", Document(title="alpha"))
    assert not allowed(policy, User(name="bo"), "read", Document(title="alpha"))
    assert policy.plan("read", User, Document).sql_error is not None


# -- lookup ----------------------------------------------------------------------------------


def test_rules_for_one_permission_or_together() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Document, when=PUBLIC)
    policy.allow("read", subject=User, target=Document, when=OWNER)
    plan = policy.plan("read", User, Document)
    assert isinstance(plan, Plan)
    assert plan.rule == Or((as_rule(PUBLIC), as_rule(OWNER)))
    assert len(plan.rules) == 2
    alice = User(id=1)
    assert allowed(policy, alice, "read", Document(is_public=True, owner_id=2))
    assert allowed(policy, alice, "read", Document(is_public=False, owner_id=1))
    assert not allowed(policy, alice, "read", Document(is_public=False, owner_id=2))
    assert not allowed(policy, alice, "read", Document(is_public=None, owner_id=None))


def test_a_rule_without_permissions_applies_to_every_permission() -> None:
    policy = Policy(["read", "edit"])
    [record] = policy.allow(subject=User, target=Document, when=OWNER)
    assert record.permission is ALL_PERMISSIONS
    policy.declare("delete")  # declared later: covered too
    mine, theirs = Document(owner_id=1), Document(owner_id=2)
    for permission in ("read", "edit", "delete"):
        assert allowed(policy, User(id=1), permission, mine)
        assert not allowed(policy, User(id=1), permission, theirs)
    with pytest.raises(PermissionNotFound):
        policy.plan("publish", User, Document)  # still only declared permissions


def test_a_rule_without_permissions_ors_with_specific_rules() -> None:
    policy = Policy(["read", "edit"])
    policy.allow(subject=User, target=Document, when=OWNER)
    policy.allow("read", subject=User, target=Document, when=PUBLIC)
    public = Document(is_public=True, owner_id=2)
    assert allowed(policy, User(id=1), "read", public)
    assert not allowed(policy, User(id=1), "edit", public)


def test_target_mro_nearest_class_wins() -> None:
    policy = Policy(["read", "edit"])
    policy.allow("read", subject=User, target=Document, when=PUBLIC)
    policy.allow("edit", subject=User, target=Document, when=PUBLIC)
    policy.allow("read", subject=User, target=Invoice, when=OWNER)
    public_invoice = Invoice(is_public=True, owner_id=2)
    alice = User(id=1)
    # Invoice's rule for "read" hides Document's...
    assert not allowed(policy, alice, "read", public_invoice)
    assert allowed(policy, alice, "read", Invoice(is_public=False, owner_id=1))
    # ... but not for "edit", which Invoice has no rule for
    assert allowed(policy, alice, "edit", public_invoice)
    # and a Document is still judged by Document's rule
    assert allowed(policy, alice, "read", Document(is_public=True, owner_id=2))
    assert policy.rules_for("read", User, Invoice)[0].target_type is Invoice
    assert policy.rules_for("edit", User, Invoice)[0].target_type is Document


def test_subject_mro_nearest_class_wins() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Document, when=PUBLIC)
    policy.allow("read", subject=Admin, target=Document, when=ALLOW)
    secret = Document(is_public=False, owner_id=5)
    assert allowed(policy, Admin(id=3), "read", secret)
    assert not allowed(policy, User(id=1), "read", secret)
    # a subclass without rules of its own inherits its base's
    assert allowed(policy, Admin(id=3), "read", Document(is_public=True))


def test_subject_mro_nearest_wins_even_when_it_denies() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=object, target=Document, when=ALLOW)
    policy.allow("read", subject=User, target=Document, when=DENY)
    assert allowed(policy, Principal(), "read", Document())
    assert not allowed(policy, User(id=1), "read", Document())


def test_target_class_is_walked_before_subject_class() -> None:
    # (Invoice, object) is nearer than (Document, Admin): the target's MRO is the outer loop
    policy = Policy(["read"])
    policy.allow("read", subject=Admin, target=Document, when=ALLOW)
    policy.allow("read", target=Invoice, when=DENY)
    assert not allowed(policy, Admin(id=3), "read", Invoice())
    assert allowed(policy, Admin(id=3), "read", Document())


def test_subject_only_permission() -> None:
    policy = Policy(["reports.view"])
    policy.allow("reports.view", subject=User, when=subject.is_admin)
    assert allowed(policy, User(is_admin=True), "reports.view")
    assert not allowed(policy, User(is_admin=False), "reports.view")
    assert not allowed(policy, User(is_admin=None), "reports.view")
    # a rule without target does not answer for a target
    assert not allowed(policy, User(is_admin=True), "reports.view", Document())


def test_context_in_a_rule() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Document, when=target.level <= ctx.clearance)
    assert allowed(policy, User(), "read", Document(level=2), clearance=3)
    assert not allowed(policy, User(), "read", Document(level=4), clearance=3)


def test_no_rule_denies() -> None:
    policy = Policy(["read", "edit"])
    policy.allow("read", subject=User, target=Document, when=ALLOW)
    plan = policy.plan("edit", User, Document)
    assert plan.rule == DENY
    assert plan.rules == ()
    assert not allowed(policy, User(), "edit", Document())
    assert not allowed(policy, User(), "read", Org())  # another target class
    assert not allowed(policy, Principal(), "read", Document())  # another subject class


def test_plan_errors() -> None:
    policy = Policy(["read"])
    with pytest.raises(PermissionNotFound):
        policy.plan("edit", User, Document)
    with pytest.raises(UnmappedClass):
        policy.plan("read", User, Unmapped)


def test_plans_are_cached_until_the_policy_changes() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Document, when=PUBLIC)
    plan = policy.plan("read", User, Document)
    assert policy.plan("read", User, Document) is plan
    policy.allow("read", subject=User, target=Document, when=OWNER)
    fresh = policy.plan("read", User, Document)
    assert fresh is not plan
    assert len(fresh.rules) == 2


def test_plan_rule_is_simplified() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Document, when=PUBLIC)
    policy.allow("read", subject=User, target=Document, when=ALLOW, name="everyone")
    assert policy.plan("read", User, Document).rule == ALLOW


def test_several_policies_are_independent() -> None:
    first, second = Policy(["read"], name="first"), Policy(["read", "edit"], name="second")
    first.allow("read", subject=User, target=Document, when=ALLOW)
    second.allow("read", subject=User, target=Document, when=DENY)
    assert allowed(first, User(), "read", Document())
    assert not allowed(second, User(), "read", Document())
    assert len(first.rules()) == len(second.rules()) == 1
    with pytest.raises(PermissionNotFound):
        first.plan("edit", User, Document)
    assert "first" in repr(first)
    assert "second" in repr(second)


def test_copy_is_independent() -> None:
    policy = Policy(["read"])
    policy.allow("read", subject=User, target=Document, when=PUBLIC)
    clone = policy.copy()
    clone.allow("read", subject=User, target=Document, when=OWNER)
    assert len(policy.rules()) == 1
    assert len(clone.rules()) == 2
