"""Compatibility facades: the ancestors' public APIs, backed by bastion.

* :mod:`bastion.compat.balrog`: balrog 1.1.0 (static roles); ``import balrog`` becomes
  ``from bastion.compat import balrog``.
* :mod:`bastion.compat.keg_bouncer`: KegBouncer 1.0's permission model (entities, user mixins,
  migration helpers and its Alembic revision); ``keg_bouncer`` becomes
  ``bastion.compat.keg_bouncer`` in imports and ``version_locations``.
* :mod:`bastion.compat.shield`: shield 0.3.2 (bearer/target rules over ORM queries, deferred
  rules); ``import shield`` becomes ``from bastion.compat import shield``.
"""
