"""The rule algebra: immutable nodes, a builder, two compilers and a simplifier.

Nothing here touches a ``Session`` or does I/O: a rule is data, ``to_python`` turns it into a
predicate over loaded objects and ``to_sql`` into a SQLAlchemy ``WHERE`` expression. See
:mod:`bastion.rules.nodes` for the three-valued semantics both compilers implement.
"""

from bastion.rules.dsl import AttrExpr, ancestors, as_rule, ctx, it, subject, target
from bastion.rules.nodes import (
    ALLOW,
    DENY,
    UNKNOWN,
    Ancestors,
    And,
    Attr,
    Compare,
    Const,
    Context,
    Deferred,
    In,
    IsNull,
    Literal,
    Not,
    Or,
    PythonRule,
    Related,
    Reroot,
    Rule,
    Same,
    SqlRule,
)
from bastion.rules.simplify import simplify
from bastion.rules.to_python import NotLoaded, register_python, to_python
from bastion.rules.to_sql import SYMBOLIC, register_sql, to_sql
from bastion.rules.validate import validate

__all__ = [
    "ALLOW",
    "DENY",
    "SYMBOLIC",
    "UNKNOWN",
    "Ancestors",
    "And",
    "Attr",
    "AttrExpr",
    "Compare",
    "Const",
    "Context",
    "Deferred",
    "In",
    "IsNull",
    "Literal",
    "Not",
    "NotLoaded",
    "Or",
    "PythonRule",
    "Related",
    "Reroot",
    "Rule",
    "Same",
    "SqlRule",
    "ancestors",
    "as_rule",
    "ctx",
    "it",
    "register_python",
    "register_sql",
    "simplify",
    "subject",
    "target",
    "to_python",
    "to_sql",
    "validate",
]
