"""The example's views: each way of protecting a view with ``bastion.integrations.flask``.

==========================================  ==============================================
``GET /documents``                          the documents you may read (``authorized``: the
                                            filter runs in SQL), with Edit/Delete buttons
                                            where you may (``allowed_actions`` + ``can``)
``GET /documents/<id>``                     one document (``@requires_permission_on``)
``GET|POST /documents/<id>/edit``           edit it: 403 if you may read but not edit
``POST /documents/<id>/delete``             delete it (``get_authorized`` inside the view)
``GET /reports``                            ``@requires_permissions("reports.view")``
``GET /audit``                              a ``ProtectedView`` (``grants.audit``)
``GET|POST /login``, ``POST /logout``       Flask-Login
``GET /documents/count``                    a deliberate mistake: counts documents without
                                            any check; with ``BASTION_ENFORCE="raise"`` the
                                            request fails with ``UnauthorizedLoad``
==========================================  ==============================================
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import login_user, logout_user
from sqlalchemy.orm import Session

from bastion.grants import GrantStore
from bastion.integrations.flask import (
    ProtectedView,
    authorized,
    get_authorized,
    requires_permission_on,
    requires_permissions,
)

from ..shared import Document, User, grants, org_document_counts

__all__ = ["AuditView", "blueprint"]

blueprint = Blueprint("example", __name__)


def db() -> Session:
    """The request's session (the one bastion's authorizer uses too)."""
    return current_app.extensions["example"]["session"]()  # type: ignore[no-any-return]


@blueprint.get("/documents/count")
def count_documents() -> Any:
    """The bug enforcement coverage exists to catch: a protected model loaded unfiltered."""
    return {"documents": len(db().scalars(sa.select(Document)).all())}


@blueprint.get("/")
def index() -> Any:
    return redirect(url_for(".documents"))


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    users = db().scalars(sa.select(User).order_by(User.id)).all()
    if request.method == "GET":
        return render_template("login.html", users=users)
    user = db().scalar(sa.select(User).where(User.name == request.form.get("name", "")))
    if user is None:
        return render_template("login.html", users=users, error="No such user."), 400
    login_user(user)
    target = request.args.get("next", "")
    # only a path on this site: "//evil.example" would be another host
    if not target.startswith("/") or target.startswith("//"):
        target = url_for(".documents")
    return redirect(target)


@blueprint.post("/logout")
def logout() -> Any:
    logout_user()
    return redirect(url_for(".login"))


@blueprint.get("/documents")
def documents() -> Any:
    # The filter is part of the query: rows you may not read never leave the database.
    stmt = authorized(Document, "doc.read").order_by(Document.id)
    return render_template("documents.html", documents=db().scalars(stmt).all())


@blueprint.get("/documents/<int:document_id>")
@requires_permission_on("doc.read", Document)
def document(document: Document) -> Any:
    return render_template("document.html", document=document)


@blueprint.route("/documents/<int:document_id>/edit", methods=["GET", "POST"])
@requires_permission_on("doc.edit", Document)
def edit(document: Document) -> Any:
    if request.method == "POST":
        document.title = request.form["title"]
        document.body = request.form.get("body", "")
        db().commit()
        return redirect(url_for(".document", document_id=document.id))
    return render_template("edit.html", document=document)


@blueprint.post("/documents/<int:document_id>/delete")
def delete(document_id: int) -> Any:
    document = get_authorized(Document, document_id, "doc.delete")  # 401 / 404 / 403
    db().delete(document)
    db().commit()
    return redirect(url_for(".documents"))


@blueprint.get("/reports")
@requires_permissions("reports.view")
def reports() -> Any:
    rows = db().execute(org_document_counts()).all()
    return render_template("reports.html", rows=rows)


class AuditView(ProtectedView):
    """The grants' audit log: every HTTP method needs ``grants.audit``."""

    requires_permission = "grants.audit"

    def get(self) -> Any:
        entries = GrantStore(db(), grants).audit_log(limit=50)
        return render_template("audit.html", entries=entries)


blueprint.add_url_rule("/audit", view_func=AuditView.as_view("audit"))
