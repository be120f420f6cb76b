"""balrog's ``balrog.exceptions`` module: names from :mod:`bastion.compat.balrog`."""

from bastion.compat.balrog import Error, PermissionNotFound, RoleNotFound

__all__ = ["Error", "PermissionNotFound", "RoleNotFound"]
