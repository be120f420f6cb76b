"""shield's ``shield._version`` module: names from :mod:`bastion.compat.shield`."""

from bastion.compat.shield import __version__, __version_info__

__all__ = ["__version__", "__version_info__"]
