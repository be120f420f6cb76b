"""balrog's ``balrog.policy`` module: names from :mod:`bastion.compat.balrog`."""

from bastion.compat.balrog import Policy

__all__ = ["Policy"]
