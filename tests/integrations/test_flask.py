"""bastion.integrations.flask and bastion.compat.keg_bouncer.auth, end to end through Flask's
test client, on SQLite and PostgreSQL.

1. The example app (``examples/flask_app``, on the models, policy and data of
   ``examples/shared`` like the FastAPI example; ``test_examples_agree.py`` compares the two):
   401 / 403 / 404, filtered lists, the template helpers showing and hiding buttons with one
   query per page, the redirect to the login view, the decorator, the class-based view,
   Flask-Login's own login form and its ``X-API-Key`` request loader, ``login_as``.
2. The extension's other options: a subject loader, handlers, status config, ``NotAuthorized``
   raised in a view, Flask-SQLAlchemy's ``db``, configuration errors.
3. The KegBouncer facade: a port of KegBouncer 2.2.4's ``keg_bouncer_test_app/tests/
   test_auth.py`` (its views, adapted from Keg's ``BaseView``/``rule`` to Flask routes), and its
   README's three ways.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import flask
import flask_login
import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from bastion import NotAuthorized
from bastion.compat.keg_bouncer import auth as kb_auth
from bastion.compat.keg_bouncer.model import entities as kb_entities
from bastion.compat.keg_bouncer.model import mixins as kb_mixins
from bastion.integrations.flask import (
    Bastion,
    ConfigurationError,
    ProtectedView,
    allowed_actions,
    authorized,
    can,
    current_authorizer,
    current_subject,
    current_user_has_permissions,
    login_as,
    requires_permission_on,
    requires_permissions,
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.flask_app import create_app, init_db  # noqa: E402 - needs the repository on the path
from examples.shared import Document, User, policy  # noqa: E402

#: who may read which document in the example (the table of examples/shared/__init__.py)
READABLE = {"ada": [1, 4], "bob": [1, 2, 4], "eve": [3, 4], "dan": [3, 4]}
EDITABLE = {"ada": [1], "bob": [1, 2], "eve": [3, 4], "dan": []}
DELETABLE = {"ada": [1], "bob": [], "eve": [3, 4], "dan": []}


@pytest.fixture
def database(engine: Engine) -> Engine:
    """``engine`` with the example's tables and data."""
    if engine.dialect.name == "sqlite":  # a throw-away file: no need to wait for the disk
        sa.event.listen(engine, "connect", _no_fsync)
    init_db(engine)
    return engine


def _no_fsync(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous = OFF")


@pytest.fixture
def app(database: Engine) -> flask.Flask:
    return create_app(engine=database, TESTING=True)


@pytest.fixture
def client(app: flask.Flask) -> Any:
    return app.test_client()


@pytest.fixture
def users(database: Engine, session: Session) -> dict[str, User]:
    return {u.name: u for u in session.scalars(sa.select(User))}


def linked_documents(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'href="/documents/(\d+)"', html)]


def buttons(html: str, kind: str) -> list[int]:
    if kind == "edit":
        return [int(n) for n in re.findall(r'class="edit" href="/documents/(\d+)/edit"', html)]
    return [int(n) for n in re.findall(r'class="delete" action="/documents/(\d+)/delete"', html)]


# =============================================================================================
# 1. the example app


def test_nobody_logged_in_gets_401_whether_or_not_the_object_exists(client: Any) -> None:
    for path in ["/documents", "/documents/1", "/documents/99", "/documents/1/edit", "/reports"]:
        response = client.get(path)
        assert response.status_code == 401, path
        assert b"Please log in." in response.data  # the app's errorhandler(401) page
    assert client.post("/documents/1/delete").status_code == 401
    assert client.get("/audit").status_code == 401


def test_redirect_to_the_login_view_when_configured(database: Engine) -> None:
    app = create_app(engine=database, TESTING=True, BASTION_LOGIN_VIEW="example.login")
    client = app.test_client()
    response = client.get("/documents?page=2")
    assert response.status_code == 302
    assert response.location == "/login?next=/documents?page%3D2"
    assert client.get("/audit").location == "/login?next=/audit"
    # log in with Flask-Login's own form, and come back
    response = client.post(response.location, data={"name": "bob"})
    assert response.status_code == 302
    assert response.location == "/documents?page=2"
    assert linked_documents(client.get("/documents").text) == READABLE["bob"]


def test_login_and_logout_through_flask_login(client: Any) -> None:
    assert client.post("/login", data={"name": "nobody"}).status_code == 400
    assert client.post("/login", data={"name": "eve"}).location == "/documents"
    assert client.get("/documents/3").status_code == 200
    client.post("/logout")
    assert client.get("/documents/3").status_code == 401


def test_an_api_key_header_identifies_the_caller_for_one_request(client: Any) -> None:
    # the FastAPI example's header, read by a Flask-Login request_loader: nothing is remembered
    response = client.get("/documents", headers={"X-API-Key": "dan-key"})
    assert linked_documents(response.text) == READABLE["dan"]
    assert client.get("/documents").status_code == 401
    assert client.get("/documents", headers={"X-API-Key": "mallory-key"}).status_code == 401
    assert client.get("/audit", headers={"X-API-Key": "dan-key"}).status_code == 200
    assert client.get("/audit", headers={"X-API-Key": "eve-key"}).status_code == 403


def test_lists_are_filtered_in_sql(client: Any, users: dict[str, User]) -> None:
    for name, readable in READABLE.items():
        with login_as(client, users[name]):
            response = client.get("/documents")
            assert response.status_code == 200
            assert linked_documents(response.text) == readable, name


def test_detail_allowed_denied_missing(client: Any, users: dict[str, User]) -> None:
    for name, readable in READABLE.items():
        login_as(client, users[name])
        for doc in (1, 2, 3, 4):
            expected = 200 if doc in readable else 403
            assert client.get(f"/documents/{doc}").status_code == expected, (name, doc)
        assert client.get("/documents/99").status_code == 404


def test_edit_is_403_for_a_reader_who_may_not_edit(client: Any, users: dict[str, User]) -> None:
    login_as(client, users["dan"])  # reads globex's documents by a scoped stored grant
    assert client.get("/documents/3").status_code == 200
    assert client.get("/documents/3/edit").status_code == 403
    assert client.post("/documents/3/edit", data={"title": "x"}).status_code == 403
    login_as(client, users["ada"])  # admin of acme, by role
    assert client.get("/documents/1/edit").status_code == 200
    assert client.get("/documents/99/edit").status_code == 404
    response = client.post("/documents/1/edit", data={"title": "roadmap v2", "body": "soon"})
    assert response.status_code == 302
    assert response.location == "/documents/1"
    assert "roadmap v2" in client.get("/documents/1").text


def test_not_found_on_deny_hides_existence(database: Engine, users: dict[str, User]) -> None:
    app = create_app(engine=database, TESTING=True, BASTION_NOT_FOUND_ON_DENY=True)
    client = app.test_client()
    login_as(client, users["ada"])
    denied, missing = client.get("/documents/2"), client.get("/documents/99")
    assert denied.status_code == missing.status_code == 404
    assert denied.data == missing.data  # nothing tells them apart
    assert client.get("/documents/1").status_code == 200
    assert client.post("/documents/4/delete").status_code == 404
    login_as(client, None)
    assert client.get("/documents/2").status_code == 401  # nobody: still 401, first


def test_delete_uses_get_authorized_in_the_view(client: Any, users: dict[str, User]) -> None:
    login_as(client, users["bob"])
    assert client.post("/documents/1/delete").status_code == 403  # a viewer, owner or not
    assert client.post("/documents/99/delete").status_code == 404
    login_as(client, users["ada"])
    assert client.post("/documents/1/delete").status_code == 302
    assert client.get("/documents/1").status_code == 404


def test_template_shows_the_buttons_the_user_may_use(client: Any, users: dict[str, User]) -> None:
    for name in READABLE:
        with login_as(client, users[name]):
            html = client.get("/documents").text
            assert buttons(html, "edit") == EDITABLE[name], name
            assert buttons(html, "delete") == DELETABLE[name], name
    with login_as(client, users["dan"]):
        assert 'class="edit"' not in client.get("/documents/3").text
    with login_as(client, users["eve"]):
        assert 'class="edit" href="/documents/3/edit"' in client.get("/documents/3").text


def test_template_can_without_an_object(client: Any, users: dict[str, User]) -> None:
    expected = {"ada": (True, False), "bob": (False, False), "eve": (True, False)}
    expected["dan"] = (False, True)
    for name, (reports, audit) in expected.items():
        with login_as(client, users[name]):
            html = client.get("/documents").text
            assert ("nav-reports" in html, "nav-audit" in html) == (reports, audit), name


def test_a_list_page_costs_the_same_queries_whatever_its_size(
    app: flask.Flask, client: Any, database: Engine, session: Session, users: dict[str, User]
) -> None:
    statements: list[str] = []
    sa.event.listen(database, "before_cursor_execute", lambda *a: statements.append(a[2]))
    login_as(client, users["ada"])
    client.get("/documents")
    few = len(statements)
    session.add_all(
        Document(id=100 + n, title=f"more {n}", owner_id=users["bob"].id, org_id=1)
        for n in range(30)
    )
    session.commit()
    statements.clear()
    html = client.get("/documents").text
    assert len(buttons(html, "edit")) == 31  # ada is admin of acme: every acme document
    assert len(statements) == few


def test_requires_permissions_decorator(client: Any, users: dict[str, User]) -> None:
    statuses = {}
    for name in READABLE:
        login_as(client, users[name])
        statuses[name] = client.get("/reports").status_code
    # ada by a stored grant, eve by the staff rule
    assert statuses == {"ada": 200, "bob": 403, "eve": 200, "dan": 403}


def test_class_based_view(client: Any, users: dict[str, User]) -> None:
    login_as(client, users["dan"])  # in the group "auditors", which holds grants.audit
    response = client.get("/audit")
    assert response.status_code == 200
    assert "auditors read the audit log" in response.text
    login_as(client, users["eve"])
    assert client.get("/audit").status_code == 403


def test_login_as_scopes_and_restores(client: Any, users: dict[str, User]) -> None:
    with login_as(client, users["ada"]):
        with login_as(client, users["bob"]):
            assert linked_documents(client.get("/documents").text) == READABLE["bob"]
        assert linked_documents(client.get("/documents").text) == READABLE["ada"]
        with login_as(client, None):
            assert client.get("/documents").status_code == 401
    assert client.get("/documents").status_code == 401


def test_login_as_needs_testing(database: Engine, users: dict[str, User]) -> None:
    app = create_app(engine=database)
    with pytest.raises(ConfigurationError, match="testing"):
        login_as(app.test_client(), users["ada"])


def test_requests_in_one_app_context_do_not_share_the_subject(
    app: flask.Flask, client: Any, users: dict[str, User]
) -> None:
    with app.app_context():  # Flask then reuses this context (and g) for every request
        login_as(client, users["ada"])
        assert linked_documents(client.get("/documents").text) == READABLE["ada"]
        login_as(client, users["bob"])
        assert linked_documents(client.get("/documents").text) == READABLE["bob"]


# =============================================================================================
# 2. the extension's options, on a small app over the example's models


def close_db(_error: BaseException | None) -> None:
    session = flask.g.pop("db", None)
    if session is not None:
        session.close()


def small_app(engine: Engine, *, login: bool = True, **config: Any) -> tuple[flask.Flask, Bastion]:
    app = flask.Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test", **config)
    sessions = sessionmaker(engine)

    def db_session() -> Session:
        if "db" not in flask.g:
            flask.g.db = sessions()
        return flask.g.db  # type: ignore[no-any-return]

    app.teardown_appcontext(close_db)
    if login:
        manager = flask_login.LoginManager(app)
        manager.user_loader(lambda user_id: db_session().get(User, int(user_id)))
    bastion = Bastion(app, policy=policy, session=db_session)

    @app.get("/doc/<int:document_id>")
    @requires_permission_on("doc.read", Document)
    def show(document: Document) -> str:
        return document.title

    @app.get("/reports")
    @requires_permissions("reports.view")
    def reports() -> str:
        return "reports"

    @app.get("/raise/<int:document_id>")
    def raises(document_id: int) -> str:
        doc = current_authorizer().session.get(Document, document_id)
        current_authorizer().authorize(current_subject(), "doc.edit", doc)
        return "edited"

    return app, bastion


def test_subject_loader(database: Engine) -> None:
    app, bastion = small_app(database, login=False)
    calls = []

    @bastion.subject_loader
    def from_header() -> User | None:
        calls.append(1)
        name = flask.request.headers.get("X-User")
        return bastion.session().scalar(sa.select(User).where(User.name == name))

    @app.get("/mine")
    def mine() -> list[int]:
        stmt = authorized(Document, "doc.read").order_by(Document.id)
        ids = [d.id for d in current_authorizer().session.scalars(stmt)]
        assert can("doc.read", current_authorizer().session.get(Document, ids[0]))
        assert current_user_has_permissions("reports.view") == (current_subject().name == "eve")
        return ids

    client = app.test_client()
    assert client.get("/mine", headers={"X-User": "bob"}).json == READABLE["bob"]
    assert len(calls) == 1  # once per request, however often the subject is needed
    assert client.get("/mine").status_code == 401
    assert client.get("/doc/2", headers={"X-User": "ada"}).status_code == 403
    assert client.get("/reports", headers={"X-User": "eve"}).status_code == 200


def test_handlers_replace_the_answers(database: Engine, users: dict[str, User]) -> None:
    app, bastion = small_app(database)
    seen: list[NotAuthorized] = []

    @bastion.unauthenticated_handler
    def please_log_in() -> Any:
        return {"error": "log in first"}, 401, {"WWW-Authenticate": "Session"}

    @bastion.forbidden_handler
    def forbidden(error: NotAuthorized) -> Any:
        seen.append(error)
        return {"error": f"may not {error.permission}"}, 403

    client = app.test_client()
    response = client.get("/doc/2")
    assert (response.status_code, response.json) == (401, {"error": "log in first"})
    assert response.headers["WWW-Authenticate"] == "Session"
    login_as(client, users["ada"])
    response = client.get("/doc/2")
    assert (response.status_code, response.json) == (403, {"error": "may not doc.read"})
    assert seen[0].explanation is not None  # why: every rule tried
    assert "none matched" in str(seen[0].explanation)


def test_status_config(database: Engine, users: dict[str, User]) -> None:
    app, _ = small_app(database, BASTION_UNAUTHENTICATED_STATUS=403, BASTION_FORBIDDEN_STATUS=404)
    client = app.test_client()
    assert client.get("/reports").status_code == 403
    login_as(client, users["bob"])
    assert client.get("/reports").status_code == 404
    assert client.get("/doc/3").status_code == 404


def test_not_authorized_raised_in_a_view(database: Engine, users: dict[str, User]) -> None:
    app, _ = small_app(database)

    @app.errorhandler(403)
    def page(_error: Exception) -> Any:
        return "custom 403 page", 403

    client = app.test_client()
    assert client.get("/raise/1").status_code == 401  # subject None
    login_as(client, users["bob"])
    assert client.get("/raise/1").text == "edited"
    response = client.get("/raise/3")
    assert (response.status_code, response.text) == (403, "custom 403 page")


def test_protected_view_guards_every_method(database: Engine, users: dict[str, User]) -> None:
    app, _ = small_app(database)

    class Reports(ProtectedView):
        requires_permission = "reports.view"

        def get(self) -> str:
            return "GET"

        def post(self) -> str:
            return "POST"

        def delete(self) -> str:
            return "DELETE"

    class Unset(ProtectedView):
        def get(self) -> str:
            return "never"

    app.add_url_rule("/r", view_func=Reports.as_view("r"))
    app.add_url_rule("/unset", view_func=Unset.as_view("unset"))
    client = app.test_client()
    assert [client.open("/r", method=m).status_code for m in ("GET", "POST", "DELETE")] == [401] * 3
    login_as(client, users["bob"])
    assert [client.open("/r", method=m).status_code for m in ("GET", "POST", "DELETE")] == [403] * 3
    login_as(client, users["eve"])
    assert [client.open("/r", method=m).text for m in ("GET", "POST", "DELETE")] == [
        "GET",
        "POST",
        "DELETE",
    ]
    with pytest.raises(ConfigurationError, match="requires_permission is not set"):
        client.get("/unset")


def test_decorators_on_methods(database: Engine, users: dict[str, User]) -> None:
    app, _ = small_app(database)

    class Documents(flask.views.MethodView):
        @requires_permissions("reports.view")
        def get(self) -> str:
            return "report"

        @requires_permission_on("doc.edit", Document, arg="doc")
        def post(self, doc: Document) -> str:
            return f"edit {doc.id}"

    app.add_url_rule("/m", view_func=Documents.as_view("m"), methods=["GET"])
    app.add_url_rule("/m/<int:document_id>", view_func=Documents.as_view("m_one"))
    client = app.test_client()
    login_as(client, users["bob"])
    assert client.get("/m").status_code == 403
    assert client.post("/m/2").text == "edit 2"
    assert client.post("/m/3").status_code == 403
    login_as(client, users["eve"])
    assert client.get("/m").text == "report"


def test_id_param(database: Engine, users: dict[str, User]) -> None:
    app, _ = small_app(database)

    @app.get("/org/<int:org_id>/doc/<int:doc_id>")
    @requires_permission_on("doc.read", Document, id_param="doc_id")
    def nested(org_id: int, document: Document) -> str:
        return f"{org_id} {document.id}"

    @app.get("/ambiguous/<int:a>/<int:b>")
    @requires_permission_on("doc.read", Document)
    def ambiguous(document: Document) -> str:
        return "never"

    client = app.test_client()
    login_as(client, users["bob"])
    assert client.get("/org/1/doc/2").text == "1 2"
    with pytest.raises(ConfigurationError, match="pass id_param="):
        client.get("/ambiguous/1/2")


def test_allowed_actions_and_can(database: Engine, users: dict[str, User]) -> None:
    app, _ = small_app(database)
    with app.test_request_context():
        docs = list(current_authorizer().session.scalars(sa.select(Document).order_by(Document.id)))
        assert allowed_actions(docs) == {1: set(), 2: set(), 3: set(), 4: set()}  # nobody
        assert allowed_actions(docs[0]) == set()
        assert not can("doc.read", docs[3])
    with app.test_request_context(environ_base={"bastion.subject": users["bob"]}):
        docs = list(current_authorizer().session.scalars(sa.select(Document).order_by(Document.id)))
        assert allowed_actions(docs) == {
            1: {"doc.read", "doc.edit"},
            2: {"doc.read", "doc.edit"},
            3: set(),
            4: {"doc.read"},
        }
        assert allowed_actions(docs[3], ["doc.edit"]) == set()
        assert can("doc.edit", docs[1])
        assert not can("doc.delete", docs[1])


@pytest.mark.parametrize("explicit", [True, False], ids=["session=db", "no session="])
def test_flask_sqlalchemy(database: Engine, users: dict[str, User], explicit: bool) -> None:
    db = SQLAlchemy()
    app = flask.Flask(__name__)
    url = database.url.render_as_string(hide_password=False)
    app.config.update(TESTING=True, SECRET_KEY="t", SQLALCHEMY_DATABASE_URI=url)
    db.init_app(app)
    flask_login.LoginManager(app).user_loader(lambda i: db.session.get(User, int(i)))
    Bastion(app, policy=policy, session=db if explicit else None)

    @app.get("/docs")
    def docs() -> list[int]:
        assert current_authorizer().session is db.session()  # the request's session
        stmt = authorized(Document, "doc.read").order_by(Document.id)
        return [d.id for d in db.session.scalars(stmt)]

    client = app.test_client()
    login_as(client, users["dan"])
    assert client.get("/docs").json == READABLE["dan"]
    with app.app_context():
        db.engine.dispose()


def test_configuration_errors(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="needs a policy"):
        Bastion(flask.Flask(__name__))
    with pytest.raises(ConfigurationError, match="not one Session"):
        Bastion(policy=policy, session=Session(engine))
    app, _ = small_app(engine, login=False)
    with pytest.raises(ConfigurationError, match="Flask-Login"):
        app.test_client().get("/reports")
    bare = flask.Flask(__name__)
    with bare.test_request_context(), pytest.raises(ConfigurationError, match="not set up"):
        can("doc.read")
    nowhere = flask.Flask(__name__)
    Bastion(nowhere, policy=policy)  # no session=, and no Flask-SQLAlchemy
    with nowhere.test_request_context(), pytest.raises(ConfigurationError, match="no session"):
        current_authorizer()


# =============================================================================================
# 3. the KegBouncer facade: keg_bouncer_test_app, without Keg


class KegBase(DeclarativeBase):
    pass


class KegUser(kb_mixins.PermissionMixin, flask_login.UserMixin, KegBase):
    """keg_bouncer_test_app's User."""

    __tablename__ = "kb_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))


keg = kb_entities.entities_for(KegBase)


def keg_bouncer_app(engine: Engine, **config: Any) -> flask.Flask:
    """keg_bouncer_test_app's app and views (``keg_bouncer_test_app/views.py``)."""
    KegBase.metadata.create_all(engine)
    app = flask.Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="keg", **config)
    sessions = sessionmaker(engine)

    def db() -> Session:
        if "db" not in flask.g:
            flask.g.db = sessions()
        return flask.g.db  # type: ignore[no-any-return]

    app.teardown_appcontext(close_db)
    manager = flask_login.LoginManager(app)
    manager.user_loader(lambda user_id: db().get(KegUser, int(user_id)))

    @app.get("/login-with/<permission_token>")
    def login_with(permission_token: str) -> str:
        permission = db().scalar(
            sa.select(keg.Permission).where(keg.Permission.token == permission_token)
        ) or keg.Permission(token=permission_token, description="Permission " + permission_token)
        group = keg.UserGroup(label="Group with " + permission_token, permissions=[permission])
        user = KegUser(name="User with " + permission_token, user_groups=[group])
        db().add(user)
        db().commit()
        flask_login.login_user(user)
        is_logged_in_correctly = kb_auth.current_user_has_permissions(permission_token)
        assert is_logged_in_correctly
        return "Logged in" if is_logged_in_correctly else "FAILED"

    class PublicView(flask.views.MethodView):
        def get(self) -> str:
            return "Public access (GET)"

        def post(self) -> str:
            return "Public access (POST)"

    class SecretView(kb_auth.ProtectedBaseView):
        requires_permission = "view-secret"

        def get(self) -> str:
            return "Access granted (GET)"

        def post(self) -> str:
            return "Access granted (POST)"

    class SecretDecoratedView(flask.views.MethodView):
        @kb_auth.requires_permissions("view-decorated-secret")
        def get(self) -> str:
            return "Access granted (GET)"

    app.add_url_rule("/public-view", view_func=PublicView.as_view("public"))
    app.add_url_rule("/secret-view", view_func=SecretView.as_view("secret"))
    app.add_url_rule("/secret-decorated-view", view_func=SecretDecoratedView.as_view("decor"))
    return app


@pytest.fixture
def keg_client(engine: Engine) -> Any:
    return keg_bouncer_app(engine).test_client()


class TestPublicView:
    def test_not_logged_in(self, keg_client: Any) -> None:
        response = keg_client.get("/public-view")
        assert response.status_code == 200
        assert "GET" in str(response.data)

        response = keg_client.post("/public-view")
        assert response.status_code == 200
        assert "POST" in str(response.data)

    def test_logged_in(self, keg_client: Any) -> None:
        assert keg_client.get("/login-with/useless-permission").status_code == 200

        response = keg_client.get("/public-view")
        assert response.status_code == 200
        assert "GET" in str(response.data)


class TestSecretView:
    def test_not_logged_in(self, keg_client: Any) -> None:
        assert keg_client.get("/secret-view").status_code == 401
        assert keg_client.post("/secret-view").status_code == 401
        assert keg_client.get("/secret-decorated-view").status_code == 401

    def test_logged_in_unauthorized(self, keg_client: Any) -> None:
        assert keg_client.get("/login-with/useless-permission").status_code == 200
        assert keg_client.get("/secret-view").status_code == 403
        assert keg_client.get("/secret-decorated-view").status_code == 403
        assert keg_client.post("/secret-view").status_code == 403

    def test_logged_in_authorized_for_secret(self, keg_client: Any) -> None:
        assert keg_client.get("/login-with/view-secret").status_code == 200

        response = keg_client.get("/secret-view")
        assert response.status_code == 200
        assert "GET" in str(response.data)

        response = keg_client.post("/secret-view")
        assert response.status_code == 200
        assert "POST" in str(response.data)

    def test_logged_in_authorized_for_decorated_secret(self, keg_client: Any) -> None:
        assert keg_client.get("/login-with/view-decorated-secret").status_code == 200

        response = keg_client.get("/secret-decorated-view")
        assert response.status_code == 200
        assert "GET" in str(response.data)


def test_keg_bouncer_readme_three_ways(engine: Engine) -> None:
    app = keg_bouncer_app(engine)
    launched: list[str] = []

    @kb_auth.requires_permissions("launch-missiles")
    def launch_missiles(target: str = "Enemy") -> None:
        launched.append(target)

    @app.get("/launch")
    def launch() -> str:
        if kb_auth.current_user_has_permissions("launch-missiles"):
            launch_missiles()
            return "launched"
        return "not allowed"

    @app.get("/launch-anyway")
    def launch_anyway() -> str:
        launch_missiles("Elsewhere")
        return "launched"

    client = app.test_client()
    assert client.get("/launch").text == "not allowed"
    assert client.get("/launch-anyway").status_code == 401
    client.get("/login-with/useless-permission")
    assert client.get("/launch").text == "not allowed"
    assert client.get("/launch-anyway").status_code == 403
    client.get("/login-with/launch-missiles")
    assert client.get("/launch").text == "launched"
    assert client.get("/launch-anyway").text == "launched"
    assert launched == ["Enemy", "Elsewhere"]


def test_keg_bouncer_views_follow_bastion_config(engine: Engine) -> None:
    app = keg_bouncer_app(engine, BASTION_LOGIN_VIEW="login")
    Bastion(app, policy=policy, session=lambda: None)
    app.add_url_rule("/login", "login", lambda: "log in here")
    client = app.test_client()
    assert client.get("/secret-view").location == "/login?next=/secret-view"
    client.get("/login-with/useless-permission")
    assert client.get("/secret-view").status_code == 403


def test_protected_base_view_without_keg_is_a_method_view() -> None:
    assert issubclass(kb_auth.ProtectedBaseView, flask.views.MethodView)
    assert kb_auth.ProtectedBaseView.requires_permission is None
    assert kb_auth.ProtectedBaseView.require_authentication is True


def test_protected_base_view_is_kegs_base_view_when_keg_is_installed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BaseView(flask.views.MethodView):
        """Keg's BaseView, as far as KegBouncer relies on it: check_auth before the method."""

        def dispatch_request(self, **kwargs: Any) -> Any:
            self.check_auth(**kwargs)
            return super().dispatch_request(**kwargs)

    keg_web = type(sys)("keg.web")
    keg_web.BaseView = BaseView  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keg", type(sys)("keg"))
    monkeypatch.setitem(sys.modules, "keg.web", keg_web)
    try:
        reloaded = importlib.reload(kb_auth)
        assert reloaded.ProtectedBaseView.__bases__ == (BaseView,)

        class Secret(reloaded.ProtectedBaseView):
            requires_permission = "view-secret"

            def get(self) -> str:
                return "Access granted (GET)"

        app = keg_bouncer_app(engine)
        app.add_url_rule("/keg-secret", view_func=Secret.as_view("keg_secret"))
        client = app.test_client()
        assert client.get("/keg-secret").status_code == 401
        client.get("/login-with/useless-permission")
        assert client.get("/keg-secret").status_code == 403
        client.get("/login-with/view-secret")
        assert client.get("/keg-secret").text == "Access granted (GET)"
    finally:
        monkeypatch.undo()
        importlib.reload(kb_auth)  # back to the MethodView-based class
    assert kb_auth.ProtectedBaseView.__bases__ != (BaseView,)


# =============================================================================================
# enforcement coverage (BASTION_ENFORCE)


def test_enforcement_coverage_fails_a_view_that_forgets_to_authorize(database: Engine) -> None:
    from bastion import UnauthorizedLoad

    app = create_app(engine=database, TESTING=True, BASTION_ENFORCE="raise")
    client = app.test_client()
    client.post("/login", data={"name": "bob"})
    assert linked_documents(client.get("/documents").text) == READABLE["bob"]  # filtered: fine
    with pytest.raises(UnauthorizedLoad) as caught:
        client.get("/documents/count")
    assert caught.value.model is Document
    assert "views.py" in caught.value.location
    # without the setting the same (buggy) view runs
    plain = create_app(engine=database, TESTING=True).test_client()
    plain.post("/login", data={"name": "bob"})
    assert plain.get("/documents/count").json == {"documents": 4}


# -- found by review: ids, concealment, async views, stale answers -----------------------------


def test_ids_that_cannot_be_keys_are_404_not_500(database: Engine, users: dict[str, User]) -> None:
    """The database was asked anyway: SQLite's driver raised OverflowError beyond 64 bits,
    PostgreSQL DataError (integer out of range, invalid input syntax)."""
    app, _ = small_app(database)

    @app.get("/docs/<document_id>")  # no converter: the id is a string
    @requires_permission_on("doc.read", Document)
    def by_string(document: Document) -> str:
        return document.title

    client = app.test_client()
    login_as(client, users["bob"])
    assert client.get("/doc/1").status_code == 200
    assert client.get("/docs/1").status_code == 200
    for url in (
        "/doc/99999999999999999999",
        "/docs/abc",
        "/docs/1e3",
        "/docs/-99999999999999999999",
    ):
        assert client.get(url).status_code == 404, url
    assert client.get("/doc/2147483648").status_code == 404  # beyond PostgreSQL's integer too


def test_a_denial_raised_in_a_view_is_concealed_when_configured(
    database: Engine, users: dict[str, User]
) -> None:
    """BASTION_NOT_FOUND_ON_DENY applied to the decorators only: a NotAuthorized raised in a
    view still answered 403, telling a denied id from a missing one."""
    app, _ = small_app(database, BASTION_NOT_FOUND_ON_DENY=True)
    client = app.test_client()
    login_as(client, users["bob"])
    assert client.get("/raise/1").text == "edited"
    assert client.get("/raise/3").status_code == 404  # exists, denied: looks missing
    assert client.get("/doc/3").status_code == 404
    login_as(client, None)
    assert client.get("/raise/3").status_code == 401  # nobody: still 401


def test_the_decorators_guard_async_views(database: Engine, users: dict[str, User]) -> None:
    """The wrappers called the view directly: an ``async def`` view returned a coroutine."""
    app, _ = small_app(database)

    @app.get("/async/doc/<int:document_id>")
    @requires_permission_on("doc.read", Document)
    async def async_show(document: Document) -> str:
        return document.title

    @app.get("/async/reports")
    @requires_permissions("reports.view")
    async def async_reports() -> str:
        return "reports"

    client = app.test_client()
    login_as(client, users["ada"])
    assert client.get("/async/doc/1").text == "acme roadmap"
    assert client.get("/async/doc/3").status_code == 403
    assert client.get("/async/reports").text == "reports"
    login_as(client, users["bob"])
    assert client.get("/async/reports").status_code == 403


def test_can_does_not_reuse_an_answer_after_a_write(
    database: Engine, users: dict[str, User]
) -> None:
    """``allowed_actions`` remembers its answers for ``can``; a view that then gave the
    document away, deleted it or committed still got the old answer from ``can``."""
    app, _ = small_app(database)
    with app.test_request_context(environ_base={"bastion.subject": users["bob"]}):
        session = current_authorizer().session
        bob = session.get(User, users["bob"].id)
        eve = session.scalar(sa.select(User).where(User.name == "eve"))
        doc = session.get(Document, 2)  # bob's notes: bob reads and edits
        assert allowed_actions([doc], ["doc.edit"]) == {2: {"doc.edit"}}
        assert can("doc.edit", doc)
        doc.owner_id = eve.id  # given away, not flushed
        assert not can("doc.edit", doc)
        assert not current_authorizer().check(bob, "doc.edit", doc)
        session.rollback()
        assert allowed_actions([doc], ["doc.edit"]) == {2: {"doc.edit"}}
        session.delete(doc)
        assert not can("doc.edit", doc)
        session.rollback()
        assert allowed_actions([doc], ["doc.edit"]) == {2: {"doc.edit"}}
        session.execute(sa.update(Document).where(Document.id == 2).values(owner_id=eve.id))
        # a write the object does not show: any UPDATE, DELETE or flush forgets every answer
        session.expire(doc)
        assert not can("doc.edit", doc)
