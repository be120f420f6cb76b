"""Compatibility facades: the ancestors' public APIs, backed by bastion.

* :mod:`bastion.compat.balrog`: balrog 1.1.0 (static roles); ``import balrog`` becomes
  ``from bastion.compat import balrog``.
"""
