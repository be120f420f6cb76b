"""balrog's ``balrog.role`` module: names from :mod:`bastion.compat.balrog`."""

from bastion.compat.balrog import Role

__all__ = ["Role"]
