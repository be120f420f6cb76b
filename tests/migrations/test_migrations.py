"""bastion's Alembic branch and link helpers, on SQLite and PostgreSQL.

Each test builds a throw-away Alembic environment in ``tmp_path``: an ``alembic.ini`` whose
``version_locations`` names the app's own directory and the package resource
``bastion:migrations/versions``, an ``env.py`` that runs on the test's connection, and one app
revision (depending on bastion's) that creates three user tables (integer, UUID and string keys)
and their link tables with :func:`bastion.migrations.link_user_to_grants`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bastion import InvalidArgument, migrations
from bastion.grants import grant_models

GRANT_TABLES = {
    "bastion_permissions",
    "bastion_bundles",
    "bastion_groups",
    "bastion_bundle_permissions",
    "bastion_group_permissions",
    "bastion_group_bundles",
    "bastion_audit",
}
LINK_TABLES = {
    f"bastion_{stem}_{kind}"
    for stem in ("users", "accounts", "bots")
    for kind in ("permissions", "bundles", "groups")
}
APP_TABLES = {"users", "accounts", "robots"}

ENV_PY = """
from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    target_metadata=config.attributes.get("target_metadata"),
    compare_type=True,
    compare_server_default=config.attributes["compare_server_default"],
)
with context.begin_transaction():
    context.run_migrations()
"""

APP_REVISION = '''
"""app: users (integer key), accounts (UUID key), robots (string key) and their grant links."""
import sqlalchemy as sa
from alembic import op

from bastion.migrations import GRANTS_REVISION, drop_link_from_user, link_user_to_grants

revision = "a0a0a0a00001"
down_revision = None
branch_labels = ("app",)
depends_on = (GRANTS_REVISION,)


def upgrade():
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )
    op.create_table("accounts", sa.Column("uid", sa.Uuid, primary_key=True))
    op.create_table("robots", sa.Column("name", sa.String(64), primary_key=True))
    link_user_to_grants(op, "users", "id", sa.Integer())
    link_user_to_grants(op, "accounts", "uid", sa.Uuid())
    link_user_to_grants(op, "robots", "name", sa.String(64), table_prefix="bots")


def downgrade():
    drop_link_from_user(op, "robots", table_prefix="bots")
    drop_link_from_user(op, "accounts")
    drop_link_from_user(op, "users")
    for name in ("robots", "accounts", "users"):
        op.drop_table(name)
'''


def app_models() -> tuple[sa.MetaData, Any]:
    """The app's models: the same three user tables, each registered for grants."""

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(sa.String(50))

    class Account(Base):
        __tablename__ = "accounts"
        uid: Mapped[uuid.UUID] = mapped_column(primary_key=True)

    class Robot(Base):
        __tablename__ = "robots"
        name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)

    grants = grant_models(Base)
    grants.register_user(User)
    grants.register_user(Account)
    grants.register_user(Robot, table_prefix="bots")
    return Base.metadata, grants


def grant_only_metadata() -> sa.MetaData:
    class Base(DeclarativeBase):
        pass

    grant_models(Base)
    return Base.metadata


@pytest.fixture
def alembic_dir(tmp_path: Path) -> Path:
    env = tmp_path / "env"
    (env / "versions").mkdir(parents=True)
    (env / "env.py").write_text(ENV_PY)
    (env / "versions" / "a0a0a0a00001_app.py").write_text(APP_REVISION)
    (tmp_path / "alembic.ini").write_text(
        textwrap.dedent(
            """\
            [alembic]
            script_location = %(here)s/env
            path_separator = space
            version_locations = %(here)s/env/versions bastion:migrations/versions
            """
        )
    )
    return tmp_path


@pytest.fixture
def config(alembic_dir: Path) -> Config:
    return Config(str(alembic_dir / "alembic.ini"))


@pytest.fixture
def run(engine: Engine, config: Config) -> Iterator[Any]:
    """``run(command.upgrade, "heads")``: an Alembic command on the test database."""

    def run(fn: Any, *args: Any, metadata: sa.MetaData | None = None) -> None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            config.attributes["target_metadata"] = metadata
            config.attributes["compare_server_default"] = compare_server_default
            fn(config, *args)

    yield run
    config.attributes.clear()


def tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def compare_server_default(
    context: MigrationContext,
    inspected_column: sa.Column[Any],
    metadata_column: sa.Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic's own comparison, except for one false positive: on SQLite it reports a change
    for every ``server_default=""`` (reflected as ``('')``, it strips the quotes of ``'x'``
    but not of ``''``). The same schema compares clean on PostgreSQL, and on SQLite with
    ``server_default=sa.text("''")``."""
    if (
        context.dialect.name == "sqlite"
        and rendered_metadata_default == ""
        and inspected_default in ("''", "('')")
    ):
        return False
    return None  # Alembic decides


def differences(engine: Engine, metadata: sa.MetaData) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "compare_server_default": compare_server_default},
        )
        return list(compare_metadata(context, metadata))


def fingerprint(engine: Engine) -> dict[str, Any]:
    """Everything reflection sees of the schema, except ``alembic_version``."""
    inspector = sa.inspect(engine)
    found: dict[str, Any] = {}
    for name in sorted(tables(engine)):
        found[name] = {
            "columns": [
                (c["name"], repr(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(name)
            ],
            "pk": inspector.get_pk_constraint(name)["constrained_columns"],
            "fks": sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    tuple(sorted((fk.get("options") or {}).items())),
                )
                for fk in inspector.get_foreign_keys(name)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(name)
            ),
        }
    return found


# -- the package resource ------------------------------------------------------------------


def test_package_resource_location_finds_the_bastion_branch(config: Config) -> None:
    script = ScriptDirectory.from_config(config)
    head = script.get_revision("bastion@head")
    assert head is not None
    assert head.revision == migrations.GRANTS_REVISION
    assert head.branch_labels == {migrations.BRANCH_LABEL}
    assert head.down_revision is None
    assert Path(head.path).parent == Path(migrations.VERSIONS_DIR)
    assert set(script.get_heads()) == {migrations.GRANTS_REVISION, "a0a0a0a00001"}
    app = script.get_revision("app@head")
    assert app is not None
    assert app.dependencies == migrations.GRANTS_REVISION


def test_versions_dir_is_the_package_resource() -> None:
    resource = resources.files("bastion") / "migrations" / "versions"
    assert Path(str(resource)).resolve() == Path(migrations.VERSIONS_DIR)
    assert migrations.VERSION_LOCATION == "bastion:migrations/versions"
    revisions = list(Path(migrations.VERSIONS_DIR).glob("*.py"))
    assert [p.name for p in revisions] == [f"{migrations.GRANTS_REVISION}_bastion_grants.py"]


def test_versions_dir_works_as_a_plain_path(alembic_dir: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(alembic_dir / "env"))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", f"{alembic_dir / 'env' / 'versions'}:{migrations.VERSIONS_DIR}"
    )
    script = ScriptDirectory.from_config(config)
    assert script.get_revision("bastion@head").revision == migrations.GRANTS_REVISION  # type: ignore[union-attr]


def test_importing_the_helpers_does_not_import_alembic() -> None:
    code = "import sys, bastion.migrations, bastion.grants; assert 'alembic' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- upgrade / downgrade -------------------------------------------------------------------


def test_upgrade_downgrade_upgrade_matches_the_models(engine: Engine, run: Any) -> None:
    metadata, _ = app_models()
    for _ in range(2):
        run(command.upgrade, "heads")
        assert tables(engine) == GRANT_TABLES | LINK_TABLES | APP_TABLES
        assert differences(engine, metadata) == []
        run(command.check, metadata=metadata)  # `alembic check`: no new upgrade operations
        run(command.downgrade, "base")
        assert tables(engine) == set()


def test_bastion_branch_alone(engine: Engine, run: Any) -> None:
    run(command.upgrade, "bastion@head")
    assert tables(engine) == GRANT_TABLES
    assert differences(engine, grant_only_metadata()) == []
    run(command.downgrade, "bastion@base")
    assert tables(engine) == set()
    run(command.upgrade, "bastion@head")
    assert tables(engine) == GRANT_TABLES


def test_downgrading_bastion_takes_the_dependent_app_revision_first(
    engine: Engine, run: Any
) -> None:
    run(command.upgrade, "heads")
    run(command.downgrade, "bastion@base")
    assert tables(engine) == set()


def test_migrated_schema_is_what_create_all_builds(engine: Engine, run: Any) -> None:
    """Reflection of both schemas is identical: columns, types, defaults, keys, ON DELETE,
    indexes and unique constraints (``compare_metadata`` does not compare all of these)."""
    metadata, _ = app_models()
    run(command.upgrade, "heads")
    migrated = fingerprint(engine)
    run(command.downgrade, "base")
    metadata.create_all(engine)
    try:
        assert fingerprint(engine) == migrated
    finally:
        metadata.drop_all(engine)
    on_delete = {fk[3] for table in migrated.values() for fk in table["fks"]}
    assert on_delete == {(("ondelete", "CASCADE"),)}


def test_migrated_schema_cascades_and_defaults(engine: Engine, run: Any) -> None:
    metadata, _ = app_models()
    run(command.upgrade, "heads")
    t = metadata.tables
    with engine.begin() as conn:
        conn.execute(t["users"].insert(), [{"id": 1, "name": "ada"}])
        conn.execute(t["bastion_permissions"].insert(), [{"id": 1, "token": "doc.read"}])
        conn.execute(t["bastion_groups"].insert(), [{"id": 1, "label": "staff"}])
        conn.execute(t["bastion_users_permissions"].insert(), [{"user_id": 1, "permission_id": 1}])
        conn.execute(t["bastion_users_groups"].insert(), [{"user_id": 1, "group_id": 1}])
        conn.execute(t["bastion_group_permissions"].insert(), [{"group_id": 1, "permission_id": 1}])
        conn.execute(t["bastion_audit"].insert(), [{"action": "grant", "subject": "ada"}])
        row = conn.execute(sa.select(t["bastion_users_permissions"])).one()
        assert (row.scope_type, row.scope_id, row.valid_from) == ("", "", None)
        audit = conn.execute(sa.select(t["bastion_audit"])).one()
        assert audit.at is not None
        assert (audit.object, audit.scope) == ("", "")
        assert conn.execute(sa.select(t["bastion_permissions"].c.description)).scalar() == ""
    with engine.begin() as conn:
        conn.execute(t["users"].delete())
        assert count(conn, t["bastion_users_groups"]) == 0
        assert count(conn, t["bastion_users_permissions"]) == 0
        conn.execute(t["bastion_permissions"].delete())
        assert count(conn, t["bastion_group_permissions"]) == 0
        assert count(conn, t["bastion_groups"]) == 1


def count(conn: sa.Connection, table: sa.Table) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_link_helpers_refuse_empty_names() -> None:
    with pytest.raises(InvalidArgument, match="must not be empty"):
        migrations.link_user_to_grants(None, "", "id", sa.Integer())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="must not be empty"):
        migrations.drop_link_from_user(None, "users", prefix="")  # type: ignore[arg-type]
