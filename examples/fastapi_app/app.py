"""The FastAPI app: every endpoint is guarded by a bastion dependency.

=========================================  =================================================
``GET /documents``                         the documents the caller may read (filtered in SQL),
                                           each with the caller's actions on it (one query)
``GET /documents/{doc_id}``                one document: 401 / 404 / 403 / 200
``PATCH /documents/{doc_id}``              edit it: needs ``doc.edit``
``DELETE /documents/{doc_id}``             delete it: needs ``doc.delete`` (204)
``GET /documents/{doc_id}/who-can``        who may read or edit it (``who_can``, in SQL)
``GET /reports/documents-per-organisation``  an object-less permission: ``reports.view``
``GET /audit``                             the stored grants' audit log: ``grants.audit``
``GET /stats/documents``                   a deliberate mistake: counts documents without any
                                           check; with ``enforce="raise"`` the request fails
                                           with ``UnauthorizedLoad``
=========================================  =================================================

The models, the policy and the data are ``examples/shared``, as in the Flask example, so both
apps answer alike. The caller is the user whose API key is in the ``X-API-Key`` header (a
security scheme in the OpenAPI schema, so Swagger UI's *Authorize* button works). No key, or an
unknown one: 401.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from bastion import install_enforcement
from bastion.asyncio import AsyncAuthorizer, AsyncGrantStore
from bastion.integrations.fastapi import Bastion

from ..shared import (
    DEFAULT_SQLITE_FILE,
    Base,
    Document,
    User,
    grants,
    is_empty,
    org_document_counts,
    policy,
    seed,
)

__all__ = ["bastion", "create_app", "database_url", "router", "setup_database"]

#: where the data lives unless ``DATABASE_URL`` says otherwise
DEFAULT_URL = f"sqlite+aiosqlite:///{DEFAULT_SQLITE_FILE}"
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def database_url(url: str | None = None) -> str:
    """``url``, else ``$DATABASE_URL``, else a SQLite file; plain ``sqlite://`` and
    ``postgresql://`` URLs get their async driver (aiosqlite, asyncpg)."""
    parsed = make_url(url or os.environ.get("DATABASE_URL") or DEFAULT_URL)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return (parsed.set(drivername=driver) if driver else parsed).render_as_string(False)


# -- the application's own dependencies: the request's session and the caller -------------


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request (FastAPI caches it: guards and endpoint share it)."""
    async with request.app.state.sessions() as session:
        yield session


api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="a user's key: ada-key")
SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def current_user(
    session: SessionDep, key: Annotated[str | None, Security(api_key)]
) -> User | None:
    """The caller, or None (bastion answers 401)."""
    if key is None:
        return None
    return await session.scalar(sa.select(User).where(User.api_key == key))


# -- bastion: configured once, guards built from it ----------------------------------------

bastion = Bastion(policy, get_subject=current_user, get_session=get_session, explain=True)
UserDep = Annotated[User, Depends(current_user)]
AuthzDep = Annotated[AsyncAuthorizer, Depends(bastion.get_authorizer)]
Readable = Annotated[Document, Depends(bastion.require("doc.read", Document, id_param="doc_id"))]
Editable = Annotated[Document, Depends(bastion.require("doc.edit", Document, id_param="doc_id"))]
Deletable = Annotated[Document, Depends(bastion.require("doc.delete", Document, id_param="doc_id"))]
ReadableList = Annotated[sa.Select[Document], Depends(bastion.authorized(Document, "doc.read"))]
Staff = Annotated[User, Depends(bastion.require("reports.view"))]
Auditor = Annotated[User, Depends(bastion.require("grants.audit"))]

#: the actions a list row reports (the Flask example's Edit and Delete buttons)
ROW_ACTIONS = ["doc.read", "doc.edit", "doc.delete"]


class DocumentOut(BaseModel):
    id: int
    title: str
    body: str
    owner_id: int
    org_id: int | None
    is_public: bool


class DocumentListItem(DocumentOut):
    actions: list[str]  #: what the caller may do on it (one query for the whole page)


class DocumentPatch(BaseModel):
    title: str
    body: str | None = None  #: unchanged if left out


class UserOut(BaseModel):
    id: int
    name: str


class AuditEntry(BaseModel):
    """A row of the grants' audit log (what the Flask example's audit page shows)."""

    at: datetime
    actor: str | None
    action: str
    subject: str
    object: str
    scope: str
    reason: str | None


def _out(doc: Document) -> DocumentOut:
    return DocumentOut.model_validate(doc, from_attributes=True)


router = APIRouter()


@router.get("/documents")
async def list_documents(
    readable: ReadableList,
    session: SessionDep,
    user: UserDep,
    authz: AuthzDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DocumentListItem]:
    """The documents the caller may read, with what the caller may do on each."""
    page = (await session.scalars(readable.order_by(Document.id).limit(limit).offset(offset))).all()
    actions = await authz.allowed_actions(user, list(page), ROW_ACTIONS)
    return [
        DocumentListItem(**_out(doc).model_dump(), actions=sorted(actions[doc.id])) for doc in page
    ]


@router.get("/documents/{doc_id}")
async def show_document(doc: Readable) -> DocumentOut:
    return _out(doc)


@router.patch("/documents/{doc_id}")
async def edit_document(doc: Editable, patch: DocumentPatch, session: SessionDep) -> DocumentOut:
    doc.title = patch.title
    if patch.body is not None:
        doc.body = patch.body
    await session.commit()
    return _out(doc)


@router.delete("/documents/{doc_id}", status_code=204)
async def delete_document(doc: Deletable, session: SessionDep) -> Response:
    await session.delete(doc)
    await session.commit()
    return Response(status_code=204)


@router.get("/documents/{doc_id}/who-can")
async def who_can(
    doc: Readable,
    session: SessionDep,
    authz: AuthzDep,
    permission: Literal["doc.read", "doc.edit"] = "doc.edit",
) -> list[UserOut]:
    """The users who may ``permission`` the document (the caller must be able to read it)."""
    users = await session.scalars(authz.who_can(permission, doc).order_by(User.id))
    return [UserOut(id=u.id, name=u.name) for u in users]


@router.get("/reports/documents-per-organisation")
async def documents_per_organisation(staff: Staff, session: SessionDep) -> dict[str, int]:
    """An object-less permission: staff, or a stored grant."""
    rows = await session.execute(org_document_counts())
    return {str(name): int(count) for name, count in rows}


@router.get("/audit")
async def audit_log(auditor: Auditor, session: SessionDep) -> list[AuditEntry]:
    """The stored grants' audit log, newest first: ``grants.audit`` (held through a group)."""
    entries = await AsyncGrantStore(session, grants).audit_log(limit=50)
    return [AuditEntry.model_validate(entry, from_attributes=True) for entry in entries]


# -- the app -------------------------------------------------------------------------------


async def setup_database(engine: AsyncEngine) -> None:
    """Create the tables, and the example data if there are no users yet."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        if await session.run_sync(is_empty):
            await session.run_sync(seed)  # the shared, synchronous seed, on this connection


class ExampleSession(Session):
    """The app's sessions: enforcement coverage watches their queries (see ``enforce=``)."""


install_enforcement(ExampleSession, policy)


@router.get("/stats/documents")
async def count_documents(session: SessionDep) -> dict[str, int]:
    """A deliberate mistake: documents loaded without any check. With ``enforce="raise"`` the
    request fails with ``UnauthorizedLoad`` naming the model and this line."""
    return {"documents": len((await session.scalars(sa.select(Document))).all())}


def create_app(
    url: str | None = None, *, engine: AsyncEngine | None = None, enforce: str | None = None
) -> FastAPI:
    """The app on ``engine``, or on an engine for :func:`database_url` (``url``); ``enforce``
    ("raise" or "warn") turns on enforcement coverage for every request."""
    own_engine = engine is None
    engine = engine or create_async_engine(database_url(url))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await setup_database(app.state.engine)
        yield
        if own_engine:
            await app.state.engine.dispose()

    app = FastAPI(title="bastion FastAPI example", lifespan=lifespan)
    app.state.engine = engine
    app.state.sessions = async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=ExampleSession
    )
    app.include_router(router)
    bastion.install(app, enforce=enforce)  # NotAuthorized -> 401 / 403 JSON
    return app
