"""The FastAPI app: every endpoint is guarded by a bastion dependency.

=========================================  =================================================
``GET /documents``                         the documents the caller may read (filtered in SQL),
                                           each with the caller's actions on it (one query)
``GET /documents/{doc_id}``                one document: 401 / 404 / 403 / 200
``PATCH /documents/{doc_id}``              rename it: needs ``doc.edit``
``GET /documents/{doc_id}/who-can``        who may read or edit it (``who_can``, in SQL)
``GET /reports/documents-per-organisation``  an object-less permission: ``reports.view``
=========================================  =================================================

The caller is the user whose API key is in the ``X-API-Key`` header (a security scheme in the
OpenAPI schema, so Swagger UI's *Authorize* button works). No key: 401.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
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
from bastion.asyncio import AsyncAuthorizer
from bastion.integrations.fastapi import Bastion

from .models import Base, Document, Organisation, User, policy, seed

__all__ = ["bastion", "create_app", "database_url", "router", "setup_database"]

#: where the data lives unless ``DATABASE_URL`` says otherwise
DEFAULT_URL = "sqlite+aiosqlite:///fastapi_example.sqlite"
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
ReadableList = Annotated[sa.Select[Document], Depends(bastion.authorized(Document, "doc.read"))]
Staff = Annotated[User, Depends(bastion.require("reports.view"))]


class DocumentOut(BaseModel):
    id: int
    title: str
    owner_id: int
    org_id: int | None
    is_public: bool


class DocumentListItem(DocumentOut):
    actions: list[str]  #: what the caller may do on it (one query for the whole page)


class DocumentPatch(BaseModel):
    title: str


class UserOut(BaseModel):
    id: int
    name: str


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
    actions = await authz.allowed_actions(user, list(page), ["doc.read", "doc.edit"])
    return [
        DocumentListItem(**_out(doc).model_dump(), actions=sorted(actions[doc.id])) for doc in page
    ]


@router.get("/documents/{doc_id}")
async def show_document(doc: Readable) -> DocumentOut:
    return _out(doc)


@router.patch("/documents/{doc_id}")
async def edit_document(doc: Editable, patch: DocumentPatch, session: SessionDep) -> DocumentOut:
    doc.title = patch.title
    await session.commit()
    return _out(doc)


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
    """An object-less permission: staff only."""
    stmt = (
        sa.select(Organisation.name, sa.func.count(Document.id))
        .outerjoin(Document, Document.org_id == Organisation.id)
        .group_by(Organisation.name)
        .order_by(Organisation.name)
    )
    return {str(row[0]): int(row[1]) for row in await session.execute(stmt)}


# -- the app -------------------------------------------------------------------------------


async def setup_database(engine: AsyncEngine) -> None:
    """Create the tables, and the example data if there are no users yet."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        if await session.scalar(sa.select(sa.func.count()).select_from(User)) == 0:
            await seed(session)


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
