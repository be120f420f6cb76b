"""KegBouncer 1.0's permission model, backed by SQLAlchemy 2 and bastion.

An application written for KegBouncer moves by changing ``keg_bouncer`` to
``bastion.compat.keg_bouncer`` in its imports and in ``version_locations``, and by binding the
entities to its declarative base. The module layout, public names, table and column names, the
Alembic revision id (``588daaa98ab1``) and branch label (``keg-bouncer``) are KegBouncer's:

* ``model.entities``: ``Permission(token, description)``, ``PermissionBundle(label)``,
  ``UserGroup(label)``, the link tables ``user_group_permission_map``, ``user_group_bundle_map``,
  ``bundle_permission_map``, the relationships ``PermissionBundle.permissions``,
  ``UserGroup.permissions``, ``UserGroup.bundles`` and their backrefs ``parent_bundles``,
  ``parent_user_groups``, ``UserGroup.get_all_permissions()``, ``joined_permission_query``,
  ``make_user_to_user_group_link``, ``user_user_group_link_table_name``;
* ``model.mixins``: ``UserMixin`` (``primary_key_column``, ``user_groups`` with backref
  ``users``, ``user_user_group_map``, ``get_all_permissions()``, ``has_permissions(*tokens)``,
  ``has_any_permissions(*tokens)``, ``reset_permission_cache()``), and KegBouncer 2.x's
  ``PermissionMixin`` (primary key detected, one link table per user table,
  ``get_all_permissions_without_cache()``);
* ``model.migration``: ``link_user_to_user_groups(op, User.id)``,
  ``drop_link_from_user_to_user_groups(op)``;
* ``model.utils``: ``make_link``;
* the revision in ``alembic/versions`` (``version_locations = ...
  bastion.compat.keg_bouncer:alembic/versions``, with ``path_separator = space``).

As in KegBouncer, a user holds permissions through its user groups only (a group holds
permissions directly and through bundles); for direct grants, scopes, expiry and audit, use
:mod:`bastion.grants`.

Where the entities live
-----------------------
KegBouncer declared its entities on Keg's ``db.Model`` when imported. Here
``model.entities.bind(Base)`` builds them on your declarative base (once per base) and makes the
module's names refer to them; without Keg, call it before importing ``Permission`` & co. When Keg
is installed, using a name before any ``bind`` binds ``keg.db.db.Model``, as KegBouncer. A user
class mixing in ``UserMixin`` builds the entities on its own base if needed.

Bridge into bastion
-------------------
:func:`holds` (``from bastion.compat.keg_bouncer import holds``) is a rule node:
``policy.allow("launch", subject=User, when=holds("launch-missiles"))``. It compiles to Python
(``token in user.get_all_permissions()`` tokens) and to SQL (``EXISTS`` over the user's groups'
permissions and bundles), which agree; see :mod:`bastion.compat.keg_bouncer.rules`.

Differences from KegBouncer 1.0 (bugs fixed, and what changed with the platform)
--------------------------------------------------------------------------------
1. **The permission cache invalidates.** KegBouncer cached ``get_all_permissions()`` on the
   instance for its lifetime (its own test asserts a stale result after ``user.user_groups =
   []``). Here the cache is dropped by any flush of the session (including the autoflush that
   ``get_all_permissions`` performs first), by ``Session.execute`` of INSERT/UPDATE/DELETE, by
   ``commit``/``rollback`` and by expiring the user; a later call sees grants and revokes made
   through the ORM in the same session, and a new transaction sees what others committed.
   Writes through a raw connection, outside the session, are seen after ``commit``/``rollback``
   or ``reset_permission_cache()``. An empty permission set is cached too (KegBouncer's
   ``cached or query`` re-queried it every time).
2. **The downgrade runs.** KegBouncer's ``downgrade(op)`` took an argument Alembic never passes;
   revision ``588daaa98ab1`` here has the same id, label and tables, and ``downgrade()``.
3. **Label uniqueness matches the migration.** KegBouncer's migration created
   ``label TEXT NOT NULL UNIQUE`` for bundles and groups, its models declared no ``unique``:
   ``create_all`` made databases without the constraint and autogenerate saw a difference. The
   models here declare ``unique=True``.
4. **Deleting deletes links, never shared rows.** KegBouncer's many-to-many relationships
   (``PermissionBundle.permissions``, ``UserGroup.permissions``, ``UserGroup.bundles``,
   ``User.user_groups``) had ``cascade='all'``: deleting a bundle, group or user whose collection
   was loaded also deleted the permissions, bundles or groups it pointed to, which others
   shared. Here they have the default cascade; link rows go by ``ON DELETE CASCADE`` (on SQLite,
   enable ``PRAGMA foreign_keys``, as KegBouncer needed too).
5. **New users and groups.** KegBouncer read the key before its query autoflushed, so a pending
   user or group (database-generated key) had no permissions. The session is flushed first.
6. **One query, no row multiplication.** ``get_all_permissions`` selects permissions
   ``WHERE id IN (group permissions UNION bundle permissions)`` instead of KegBouncer's outer joins
   of every permission with every bundle and group; ``joined_permission_query`` is still there.
7. **Several user models.** 1.0's fixed ``keg_bouncer_user_user_group_map`` and backref
   ``users`` allowed one user model per database and failed obscurely for a second; a clear
   ``PolicyError`` now says to use ``PermissionMixin`` (one link table per user table, as 2.x) or
   set ``user_group_link_table`` / ``user_groups_backref``. ``UserMixin`` without an ``id``
   attribute detects the single primary key (2.x), instead of failing.
8. **Platform.** Entities live on your base (above). ``joined_permission_query(session)`` takes
   the session when the base has no Flask-SQLAlchemy ``query`` property. ``make_link`` adds the
   table to the MetaData of ``from_column``'s table (Keg's ``db.Table`` only when that column has
   none). ``link_user_to_user_groups`` also takes ``User.id`` and 2.x's ``parent_table_name``.
   ``UserMixin`` no longer inherits ``flask_user.UserMixin`` (mix in ``flask_login.UserMixin``
   yourself) and the entities do not mix in KegElements' ``MethodsMixin``. KegBouncer's Flask
   helpers (``keg_bouncer.auth``) are not part of this model facade: they come with bastion's
   Flask integration. KegBouncer 2.x's password, login-history and token helpers are not
   provided.
"""

from bastion.compat.keg_bouncer.rules import HoldsPermission, holds

__all__ = ["HoldsPermission", "holds"]
__version__ = "1.0.0"
