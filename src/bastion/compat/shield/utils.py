"""shield's ``shield.utils`` module: names from :mod:`bastion.compat.shield`."""

from bastion.compat.shield import filter_, has, registry, type_for

__all__ = ["filter_", "has", "registry", "type_for"]
