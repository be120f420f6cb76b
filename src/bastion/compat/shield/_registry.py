"""shield's ``shield._registry`` module: names from :mod:`bastion.compat.shield`."""

from bastion.compat.shield import CachedDict, InheritableDict, Registry, registry

__all__ = ["CachedDict", "InheritableDict", "Registry", "registry"]
