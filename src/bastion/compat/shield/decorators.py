"""shield's ``shield.decorators`` module: names from :mod:`bastion.compat.shield`."""

from bastion.compat.shield import DeferredRule, Rule, RuleBase, deferred_rule, registry, rule

__all__ = ["DeferredRule", "Rule", "RuleBase", "deferred_rule", "registry", "rule"]
