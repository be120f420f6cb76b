"""Decision traces: which branch of a rule decided, and why the others did not.

``explain_rule(rule, subject, target, context)`` evaluates a rule like the Python compiler does
(same three-valued semantics, same answer) but records, for every node, its outcome and a reason
in words: the values compared, the related objects tried, the tier a grant came from. Node kinds
added by other modules register an explainer with :func:`register_explainer` (as they register
compilers). Unlike a check, an explanation may load what is missing (lazily): it is for support
and audit, not for the hot path.

``str(explanation)`` renders a tree for a terminal (``✓`` TRUE, ``✗`` FALSE, ``?`` UNKNOWN);
``explanation.to_dict()`` is plain data for JSON logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect as sa_inspect

from bastion.rules.nodes import (
    Ancestors,
    And,
    Compare,
    Const,
    In,
    IsNull,
    Not,
    Or,
    PythonRule,
    Related,
    Reroot,
    Rule,
    Same,
)
from bastion.rules.to_python import LAZY_LOADS_ALLOWED, operand_reader, to_python

__all__ = ["EXPLAINERS", "Explanation", "describe", "explain_rule", "register_explainer"]

_MARK = {True: "✓", False: "✗", None: "?"}
_MAX_RELATED = 5  #: related objects listed per relationship before "... and N more"


@dataclass
class Explanation:
    """One node of a decision trace."""

    rule: str  #: the node, as text
    outcome: bool | None  #: TRUE / FALSE / UNKNOWN (None)
    reason: str  #: why, in words
    children: list[Explanation] = field(default_factory=list)
    kind: str = ""  #: the node type, e.g. "Or", "HasGrant", "rule"

    @property
    def allowed(self) -> bool:
        """Only TRUE allows."""
        return self.outcome is True

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON logs)."""
        return {
            "kind": self.kind,
            "rule": self.rule,
            "outcome": self.outcome,
            "reason": self.reason,
            "children": [c.to_dict() for c in self.children],
        }

    def lines(self, indent: str = "") -> list[str]:
        """The tree as text lines."""
        head = f"{indent}{_MARK[self.outcome]} {self.reason}"
        out = [head]
        for child in self.children:
            out.extend(child.lines(indent + "    "))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def matched(self) -> list[Explanation]:
        """The chain of TRUE nodes from here down (the branch that allowed)."""
        if self.outcome is not True:
            return []
        for child in self.children:
            if child.outcome is True:
                return [self, *child.matched()]
        return [self]


#: node class -> explainer(node, subject, target, context, it) -> Explanation
EXPLAINERS: dict[type[Rule], Callable[..., Explanation]] = {}


def register_explainer(
    node_type: type[Rule],
) -> Callable[[Callable[..., Explanation]], Callable[..., Explanation]]:
    """Decorator registering the explainer of ``node_type``."""

    def decorate(fn: Callable[..., Explanation]) -> Callable[..., Explanation]:
        EXPLAINERS[node_type] = fn
        return fn

    return decorate


def explain_rule(
    rule: Rule, subject: Any, target: Any, context: Mapping[str, Any], it: Any = None
) -> Explanation:
    """Evaluate ``rule`` with a trace (missing data is loaded lazily)."""
    token = LAZY_LOADS_ALLOWED.set(True)
    try:
        return _explain(rule, subject, target, context, it)
    finally:
        LAZY_LOADS_ALLOWED.reset(token)


def _explain(rule: Rule, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    for cls in type(rule).__mro__:
        fn = EXPLAINERS.get(cls)
        if fn is not None:
            return fn(rule, s, t, c, i)
    return _leaf(rule, s, t, c, i)


def describe(obj: Any) -> str:
    """``Document #7`` for a mapped instance, ``repr`` otherwise."""
    if obj is None:
        return "nothing"
    state = sa_inspect(obj, raiseerr=False)
    if state is not None and state.key is not None:
        return f"{type(obj).__name__} #{', '.join(map(str, state.key[1]))}"
    return repr(obj)


def _value(operand: Any, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> str:
    try:
        return repr(operand_reader(operand)(s, t, c, i))
    except Exception as exc:  # noqa: BLE001 - an explanation reports what it could not read
        return f"<{type(exc).__name__}>"


def _leaf(rule: Rule, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    outcome = to_python(rule)(s, t, c, i)
    reads = ", ".join(f"{o} = {_value(o, s, t, c, i)}" for o in rule.operands())
    verdict = {True: "true", False: "false", None: "UNKNOWN (a NULL was compared)"}[outcome]
    return Explanation(
        str(rule),
        outcome,
        f"{rule}: {verdict}" + (f" ({reads})" if reads else ""),
        kind=type(rule).__name__,
    )


for _kind in (Compare, In, IsNull, Const):
    register_explainer(_kind)(_leaf)


@register_explainer(And)
def _and(rule: And, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    children = [_explain(x, s, t, c, i) for x in rule.items]
    outcomes = [x.outcome for x in children]
    outcome = False if False in outcomes else (None if None in outcomes else True)
    reason = {
        True: "all of these hold",
        False: "not all of these hold",
        None: "some of these are UNKNOWN",
    }[outcome]
    return Explanation(str(rule), outcome, reason, children, "And")


@register_explainer(Or)
def _or(rule: Or, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    children = [_explain(x, s, t, c, i) for x in rule.items]
    outcomes = [x.outcome for x in children]
    outcome = True if True in outcomes else (None if None in outcomes else False)
    reason = {
        True: "one of these holds",
        False: "none of these holds",
        None: "none holds (some UNKNOWN)",
    }[outcome]
    return Explanation(str(rule), outcome, reason, children, "Or")


@register_explainer(Not)
def _not(rule: Not, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    inner = _explain(rule.item, s, t, c, i)
    outcome = None if inner.outcome is None else not inner.outcome
    return Explanation(str(rule), outcome, "not:", [inner], "Not")


def _related_objects(value: Any) -> list[Any]:
    if value is None:
        return []
    if hasattr(value, "_sa_instance_state"):
        return [value]
    return list(value.values() if isinstance(value, Mapping) else value)


def _owner(scope: str, s: Any, t: Any, i: Any) -> Any:
    return {"target": t, "subject": s}.get(scope, i)


@register_explainer(Related)
def _related(rule: Related, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    owner = _owner(rule.scope, s, t, i)
    objects = _related_objects(getattr(owner, rule.name, None))
    children = [_explain(rule.where, s, t, c, x) for x in objects[:_MAX_RELATED]]
    for child, obj in zip(children, objects, strict=False):
        child.reason = f"{describe(obj)}: {child.reason}"
    outcome = any(x.outcome is True for x in children) or any(
        to_python(rule.where)(s, t, c, x) is True for x in objects[_MAX_RELATED:]
    )
    more = len(objects) - _MAX_RELATED
    reason = (
        f"{rule.scope}.{rule.name}: {len(objects)} related, "
        + ("one matches" if outcome else "none matches")
        + (f" (first {_MAX_RELATED} shown, {more} more)" if more > 0 else "")
    )
    return Explanation(str(rule), outcome, reason, children, "Related")


@register_explainer(Reroot)
def _reroot(rule: Reroot, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    owner = _owner(rule.scope, s, t, i)
    objects = _related_objects(getattr(owner, rule.name, None))
    children: list[Explanation] = []
    outcome = False
    for obj in objects:  # every related object is tried; only the first few denials are kept
        child = _explain(rule.rule, s, obj, c, None)
        if child.outcome is True or len(children) < _MAX_RELATED:
            children.append(
                Explanation(
                    str(rule.rule),
                    child.outcome,
                    f"deferred to {describe(obj)} via {rule.scope}.{rule.name}",
                    [child],
                    "Deferred",
                )
            )
        if child.outcome is True:
            outcome = True
            break
    shown = "" if len(children) >= len(objects) else f" (the first {len(children)} shown)"
    reason = f"{rule.scope}.{rule.name}: " + (
        "allowed on a related object" if outcome else f"denied on all {len(objects)} related{shown}"
    )
    return Explanation(str(rule), outcome, reason, children, "Reroot")


@register_explainer(Ancestors)
def _ancestors(rule: Ancestors, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    children: list[Explanation] = []
    seen: set[int] = set()
    node = t
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        child = _explain(rule.rule, s, node, c, None)
        child.reason = f"{describe(node)}: {child.reason}"
        children.append(child)
        if child.outcome is True:
            break
        node = getattr(node, rule.parent, None)
    outcome = bool(children) and children[-1].outcome is True
    reason = (
        f"on {children[-1].reason.split(':')[0]}, an ancestor or the object itself"
        if outcome
        else f"on none of {len(children)} objects up the {rule.parent} chain"
    )
    return Explanation(str(rule), outcome, reason, children, "Ancestors")


@register_explainer(Same)
def _same(rule: Same, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    outcome = to_python(rule)(s, t, c, i)
    obj = _owner(rule.scope, s, t, i)
    verdict = "is" if outcome else "is not"
    return Explanation(str(rule), outcome, f"{describe(obj)} {verdict} the subject", kind="Same")


@register_explainer(PythonRule)
def _python_rule(rule: PythonRule, s: Any, t: Any, c: Mapping[str, Any], i: Any) -> Explanation:
    outcome = to_python(rule)(s, t, c, i)
    return Explanation(
        str(rule), outcome, f"Python function {rule.name} returned {outcome}", kind="PythonRule"
    )
