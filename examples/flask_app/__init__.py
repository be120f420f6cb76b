"""bastion's Flask example: organisations, members and documents behind bastion's Flask extension.

The models, the policy and the data are ``examples/shared``, which the FastAPI example uses too;
this package is the Flask glue: Flask-Login's session for the caller, views and templates.

``python -m examples.flask_app`` creates and fills the database if it is empty and serves the app
on http://127.0.0.1:5000 (``flask --app examples.flask_app run`` works too, after ``flask --app
examples.flask_app init-db``). ``DATABASE_URL`` selects the database: a SQLite file by default,
or e.g. ``postgresql+psycopg://user@localhost/example``. Log in as ada, bob, eve or dan (no
password: it is a demo), or send ``X-API-Key: ada-key`` as the FastAPI example takes it, and
compare what each may see and do; ``examples/shared`` has the table.
"""

from __future__ import annotations

import os
from typing import Any

import click
import sqlalchemy as sa
from flask import Flask, Request, g, render_template
from flask_login import LoginManager
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bastion import install_enforcement
from bastion.integrations.flask import Bastion

from ..shared import DEFAULT_SQLITE_FILE, User, init_db, policy
from .views import blueprint

__all__ = ["DEFAULT_URL", "create_app", "init_db"]

#: where the data lives unless ``DATABASE_URL`` (or ``create_app(database_url=...)``) says otherwise
DEFAULT_URL = f"sqlite:///{DEFAULT_SQLITE_FILE}"


def create_app(
    database_url: str | None = None, *, engine: Engine | None = None, **config: Any
) -> Flask:
    """The app factory: ``engine`` (or ``database_url``, ``$DATABASE_URL``, a SQLite file), and
    config overrides such as ``BASTION_LOGIN_VIEW="example.login"`` or ``TESTING=True``."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=os.environ.get("SECRET_KEY", "change-me"), **config)
    if engine is None:
        engine = sa.create_engine(database_url or os.environ.get("DATABASE_URL") or DEFAULT_URL)
    sessions = sessionmaker(engine)
    # Enforcement coverage: in a request opened with BASTION_ENFORCE ("raise" or "warn"), a load
    # of a protected model that no check or filter covered fails, naming the model and the line.
    install_enforcement(sessions, policy)

    def db_session() -> Session:
        """The request's session: one per app context, closed when it ends."""
        if "db_session" not in g:
            g.db_session = sessions()
        return g.db_session  # type: ignore[no-any-return]

    @app.teardown_appcontext
    def close_session(_error: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return db_session().get(User, int(user_id))

    @login_manager.request_loader
    def load_user_from_api_key(request: Request) -> User | None:
        """No one logged in: the user whose key is in ``X-API-Key`` (the FastAPI app's header)."""
        key = request.headers.get("X-API-Key")
        if key is None:
            return None
        return db_session().scalar(sa.select(User).where(User.api_key == key))

    Bastion(app, policy=policy, session=db_session)
    app.extensions["example"] = {"engine": engine, "session": db_session}
    app.register_blueprint(blueprint)

    @app.errorhandler(401)
    def not_logged_in(_error: Exception) -> tuple[str, int]:
        return render_template("error.html", status=401, message="Please log in."), 401

    @app.errorhandler(403)
    def forbidden(_error: Exception) -> tuple[str, int]:
        return render_template("error.html", status=403, message="You may not do that."), 403

    @app.errorhandler(404)
    def not_found(_error: Exception) -> tuple[str, int]:
        return render_template("error.html", status=404, message="No such page."), 404

    @app.cli.command("init-db")
    def init_db_command() -> None:
        """Create the tables and the example's data (if the database is empty)."""
        click.echo("created" if init_db(engine) else "the database already has data")

    return app
