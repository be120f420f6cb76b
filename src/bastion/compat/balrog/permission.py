"""balrog's ``balrog.permission`` module: names from :mod:`bastion.compat.balrog`."""

from bastion.compat.balrog import Permission

__all__ = ["Permission"]
