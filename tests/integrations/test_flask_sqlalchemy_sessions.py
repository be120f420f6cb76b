"""Authorized sessions on Flask-SQLAlchemy 3's ``db.session``, through Flask's test client, on
SQLite and PostgreSQL.

The app restricts the request's session in ``before_request`` with
``authorize_queries(db.session, policy, subject, "read")`` (the way ``bastion.sessions`` and the
README say): every list query of the request is filtered for that subject, whether written with
``select()``, ``db.paginate``, ``db.get_or_404``, or the legacy ``Query`` (``Model.query``,
``db.session.query``); the next request, by someone else, gets its own session and subject.
"""

from __future__ import annotations

from collections.abc import Iterator

import flask
import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bastion import Policy, authorize_queries, subject, target


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Author(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "fsa_authors"
    id: Mapped[int] = mapped_column(primary_key=True)


class Note(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "fsa_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("fsa_authors.id"))
    is_public: Mapped[bool] = mapped_column(default=False)


policy = Policy(["read"])
policy.allow(
    "read", subject=Author, target=Note, when=target.is_public | (target.author_id == subject.id)
)

#: note id -> author, public; and what each visitor may read (None: nobody logged in)
NOTES = {1: (1, False), 2: (1, False), 3: (2, False), 4: (2, True)}
READABLE: dict[int | None, list[int]] = {1: [1, 2, 4], 2: [3, 4], 3: [4], None: []}


def make_app(engine: Engine) -> flask.Flask:
    app = flask.Flask(__name__)
    url = engine.url.render_as_string(hide_password=False)
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=url)
    db.init_app(app)

    @app.before_request
    def restrict_the_request_session() -> None:
        header = flask.request.headers.get("X-Author")
        author = None if header is None else db.session.get(Author, int(header))
        authorize_queries(db.session, policy, author, "read")  # None: no rows (fail closed)

    @app.get("/select")
    def with_select() -> list[int]:
        return list(db.session.scalars(sa.select(Note.id).order_by(Note.id)))

    @app.get("/model-query")
    def with_model_query() -> list[int]:
        return [n.id for n in Note.query.order_by(Note.id).all()]

    @app.get("/session-query")
    def with_session_query() -> list[int]:
        return [n.id for n in db.session.query(Note).order_by(Note.id)]

    @app.get("/paginate")
    def with_paginate() -> dict[str, object]:
        page = db.paginate(sa.select(Note).order_by(Note.id), per_page=2, error_out=False)
        return {"total": page.total, "items": [n.id for n in page.items]}

    @app.get("/notes/<int:note_id>")
    def one(note_id: int) -> str:
        return str(db.get_or_404(Note, note_id).id)

    return app


@pytest.fixture
def app(engine: Engine) -> Iterator[flask.Flask]:
    app = make_app(engine)
    with app.app_context():
        db.create_all()
        db.session.add_all([Author(id=i) for i in (1, 2, 3)])
        db.session.flush()
        db.session.add_all([Note(id=i, author_id=a, is_public=p) for i, (a, p) in NOTES.items()])
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


def get(client: flask.testing.FlaskClient, path: str, author: int | None) -> object:
    headers = {} if author is None else {"X-Author": str(author)}
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json


@pytest.mark.parametrize("path", ["/select", "/model-query", "/session-query"])
def test_list_queries_are_filtered_per_subject(app: flask.Flask, path: str) -> None:
    client = app.test_client()
    for author in (1, 2, None, 3, 1):  # one after the other: nothing carries over
        assert get(client, path, author) == READABLE[author], (path, author)


def test_paginate_counts_and_pages_only_readable_rows(app: flask.Flask) -> None:
    client = app.test_client()
    assert get(client, "/paginate", 1) == {"total": 3, "items": [1, 2]}
    assert get(client, "/paginate", 2) == {"total": 2, "items": [3, 4]}


def test_get_or_404_hides_unreadable_rows(app: flask.Flask) -> None:
    client = app.test_client()
    assert client.get("/notes/3", headers={"X-Author": "2"}).text == "3"
    assert client.get("/notes/3", headers={"X-Author": "1"}).status_code == 404


def test_the_restriction_ends_with_the_request(app: flask.Flask) -> None:
    client = app.test_client()
    assert get(client, "/select", 3) == [4]
    with app.app_context():  # a new scope, e.g. a CLI command: a new, unrestricted session
        assert Note.query.count() == 4
