"""bastion.integrations.fastapi, end to end through httpx, on SQLite and PostgreSQL.

The example app (``examples/fastapi_app``, async: aiosqlite / asyncpg) is tested as shipped; the
same models behind ``def`` endpoints on a sync ``Session`` test the thread-pool path. Who may do
what is the table in ``examples/shared/__init__.py`` (the Flask example's models, policy and data
too; ``test_examples_agree.py`` checks that both apps answer alike).
"""

# No ``from __future__ import annotations``: the endpoints defined inside functions below have
# annotations naming local guards, which FastAPI could not evaluate from strings.
import asyncio
import random
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion import Authorizer, InvalidArgument, NotAuthorized, PermissionNotFound, ctx, target
from bastion.integrations.fastapi import Bastion, install_exception_handler

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the examples are not an installed package
    sys.path.insert(0, str(ROOT))

from examples.fastapi_app import create_app, database_url, setup_database  # noqa: E402
from examples.shared import Document, User, policy  # noqa: E402

USERS = ("ada", "bob", "eve", "dan")
READ = {"ada": [1, 4], "bob": [1, 2, 4], "eve": [3, 4], "dan": [3, 4]}
EDIT = {"ada": [1], "bob": [1, 2], "eve": [3, 4], "dan": []}
DELETE = {"ada": [1], "bob": [], "eve": [3, 4], "dan": []}
REPORTS = {"ada": True, "bob": False, "eve": True, "dan": False}  # a stored grant; staff
REPORT = {"acme": 1, "globex": 2}


def key(who: str | None) -> dict[str, str]:
    return {} if who is None else {"X-API-Key": f"{who}-key"}


@pytest.fixture
async def app(async_engine: AsyncEngine) -> FastAPI:
    """The example app on a fresh database (aiosqlite / asyncpg), with its data."""
    await setup_database(async_engine)
    return create_app(engine=async_engine)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def ids(client: httpx.AsyncClient, who: str, path: str = "/documents") -> list[int]:
    response = await client.get(path, headers=key(who))
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()]


# -- the example app (async) ------------------------------------------------------------------


async def test_lists_are_filtered_per_subject_with_their_actions(client: httpx.AsyncClient) -> None:
    for who in USERS:
        response = await client.get("/documents", headers=key(who))
        assert response.status_code == 200
        page = response.json()
        assert [d["id"] for d in page] == READ[who], who
        assert [d["id"] for d in page if "doc.edit" in d["actions"]] == EDIT[who], who
        assert [d["id"] for d in page if "doc.delete" in d["actions"]] == DELETE[who], who
        assert all("doc.read" in d["actions"] for d in page)
    assert await ids(client, "bob", "/documents?limit=2&offset=1") == [2, 4]


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("mallory", 401), ("dan", 403), ("eve", 403), ("bob", 200), ("ada", 200)],
)
async def test_detail_statuses(client: httpx.AsyncClient, who: str | None, status: int) -> None:
    response = await client.get("/documents/1", headers=key(who))
    assert response.status_code == status, response.text
    body = response.json()
    if status == 200:
        assert body == {
            "id": 1,
            "title": "acme roadmap",
            "body": "",
            "owner_id": 2,
            "org_id": 1,
            "is_public": False,
        }
    elif status == 401:
        assert body == {"detail": "Not authenticated"}
    else:
        assert body["detail"] == "Forbidden"
        assert body["permission"] == "doc.read"
        assert "may not 'doc.read' on Document #1" in body["reason"]  # the app sets explain=True


async def test_missing_object_is_404_and_a_bad_id_422(client: httpx.AsyncClient) -> None:
    assert (await client.get("/documents/99", headers=key("ada"))).status_code == 404
    assert (await client.get("/documents/abc", headers=key("ada"))).status_code == 422
    # no subject wins over a missing object: an anonymous caller learns nothing about ids
    assert (await client.get("/documents/99")).status_code == 401


async def test_ids_beyond_the_key_column_are_404_not_500(client: httpx.AsyncClient) -> None:
    """The path parameter is a Python int, unbounded: SQLite's driver raised OverflowError past
    64 bits, PostgreSQL DataError past its integer's 32 (a 500 where 404 is promised)."""
    for doc in ("99999999999999999999999", "-99999999999999999999999", "2147483648"):
        response = await client.get(f"/documents/{doc}", headers=key("ada"))
        assert response.status_code == 404, doc
        response = await client.patch(f"/documents/{doc}", headers=key("ada"))
        assert response.status_code == 404, doc


async def test_edit(client: httpx.AsyncClient) -> None:
    denied = await client.patch("/documents/3", headers=key("bob"), json={"title": "x"})
    assert denied.status_code == 403
    assert denied.json()["permission"] == "doc.edit"
    # bob may read doc 4 but not edit it; the guard runs before the body is validated
    assert (await client.patch("/documents/4", headers=key("bob"), json={})).status_code == 403
    assert (await client.patch("/documents/1", headers=key("bob"), json={})).status_code == 422
    denied = await client.patch("/documents/4", headers=key("bob"), json={"title": "x"})
    assert denied.status_code == 403
    assert (await client.patch("/documents/4", json={"title": "x"})).status_code == 401
    done = await client.patch("/documents/1", headers=key("ada"), json={"title": "v2"})
    assert done.status_code == 200
    assert done.json()["title"] == "v2"
    assert done.json()["body"] == ""  # left out: unchanged
    done = await client.patch("/documents/1", headers=key("ada"), json={"title": "v2", "body": "b"})
    assert done.json()["body"] == "b"
    assert (await client.get("/documents/1", headers=key("bob"))).json()["title"] == "v2"
    assert (await client.get("/documents/4", headers=key("eve"))).json()["title"] == "press release"


async def test_delete(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/documents/1")).status_code == 401
    denied = await client.delete("/documents/1", headers=key("bob"))  # owner, but a viewer
    assert (denied.status_code, denied.json()["permission"]) == (403, "doc.delete")
    assert (await client.delete("/documents/99", headers=key("ada"))).status_code == 404
    done = await client.delete("/documents/1", headers=key("ada"))  # admin of acme, by role
    assert (done.status_code, done.content) == (204, b"")
    assert (await client.get("/documents/1", headers=key("ada"))).status_code == 404
    assert await ids(client, "bob") == [2, 4]


async def test_object_less_permission(client: httpx.AsyncClient) -> None:
    path = "/reports/documents-per-organisation"
    assert (await client.get(path)).status_code == 401
    for who, allowed in REPORTS.items():
        response = await client.get(path, headers=key(who))
        if allowed:  # eve by the staff rule, ada by a stored grant
            assert (response.status_code, response.json()) == (200, REPORT), who
        else:
            assert response.status_code == 403, who
            assert response.json()["permission"] == "reports.view"


async def test_audit_log_needs_a_permission_held_through_a_group(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/audit")).status_code == 401
    for who in ("ada", "bob", "eve"):
        assert (await client.get("/audit", headers=key(who))).status_code == 403, who
    response = await client.get("/audit", headers=key("dan"))  # in the group "auditors"
    assert response.status_code == 200
    entries = response.json()
    assert {"actor", "action", "subject", "object", "scope", "reason", "at"} <= set(entries[0])
    assert "auditors read the audit log" in [e["reason"] for e in entries]
    assert all(e["actor"] == "seed" for e in entries)


async def test_who_can(client: httpx.AsyncClient) -> None:
    async def names(who: str, doc: int, permission: str) -> Any:
        path = f"/documents/{doc}/who-can?permission={permission}"
        response = await client.get(path, headers=key(who))
        return response.json() if response.status_code == 200 else response.status_code

    assert await names("ada", 1, "doc.edit") == [{"id": 1, "name": "ada"}, {"id": 2, "name": "bob"}]
    assert [u["name"] for u in await names("dan", 4, "doc.read")] == list(USERS)
    # eve owns it; dan holds a stored grant in its organisation
    assert [u["name"] for u in await names("eve", 3, "doc.read")] == ["eve", "dan"]
    assert [u["name"] for u in await names("eve", 3, "doc.edit")] == ["eve"]
    assert await names("dan", 1, "doc.edit") == 403  # may not even read it
    assert await names("ada", 1, "doc.delete") == 422  # not an allowed value


def test_openapi_schema_declares_the_guards_parameters() -> None:
    schema = create_app(url="sqlite+aiosqlite://").openapi()
    paths = schema["paths"]

    def params(path: str, method: str = "get") -> dict[str, dict[str, Any]]:
        declared = paths[path][method].get("parameters", [])
        names = [p["name"] for p in declared]
        assert len(names) == len(set(names)), names  # every parameter declared once
        return {p["name"]: p for p in declared}

    for path, method in [
        ("/documents/{doc_id}", "get"),
        ("/documents/{doc_id}", "patch"),
        ("/documents/{doc_id}", "delete"),
        ("/documents/{doc_id}/who-can", "get"),
    ]:
        doc_id = params(path, method)["doc_id"]
        assert doc_id["in"] == "path"
        assert doc_id["required"] is True
        assert doc_id["schema"]["type"] == "integer"
        assert doc_id["description"] == "Document primary key"
        # the guard's own plumbing (subject, session) is not a parameter
        assert not any(name.startswith("bastion") for name in params(path, method))
    assert set(params("/documents")) == {"limit", "offset"}
    assert params("/reports/documents-per-organisation") == {}
    assert params("/audit") == {}
    assert params("/documents/{doc_id}/who-can")["permission"]["in"] == "query"
    # the subject dependency's security scheme is on every guarded operation
    scheme = schema["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "a user's key: ada-key",
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path == "/stats/documents":
                # the deliberate mistake of the example: no guard, so no subject and no scheme
                assert "security" not in operation
                continue
            assert operation["security"] == [{"APIKeyHeader": []}], (path, method)


def test_database_url() -> None:
    assert database_url("sqlite:///x.sqlite") == "sqlite+aiosqlite:///x.sqlite"
    assert database_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert database_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"


# -- concurrency -------------------------------------------------------------------------------

N_REQUESTS = 50


class InFlight:
    """ASGI middleware counting the requests being served at once."""

    def __init__(self, app: Any) -> None:
        self.app, self.now, self.most = app, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


async def concurrent_requests(app: FastAPI, seed: int) -> None:
    """50 requests at once from every user, lists and details mixed: no answer may carry another
    subject's rows or decision."""
    rng = random.Random(seed)
    calls = [(rng.choice(USERS), rng.choice([None, 1, 2, 3, 4])) for _ in range(N_REQUESTS)]
    counted = InFlight(app)

    async def one(who: str, doc: int | None) -> tuple[str, int | None, int, Any]:
        path = "/documents" if doc is None else f"/documents/{doc}"
        response = await client.get(path, headers=key(who))
        return who, doc, response.status_code, response.json()

    transport = httpx.ASGITransport(app=counted)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        results = await asyncio.gather(*(one(who, doc) for who, doc in calls))
    assert counted.most > 10, counted.most  # the requests really overlapped
    assert len(results) == N_REQUESTS
    for who, doc, status, body in results:
        if doc is None:
            assert status == 200, (who, body)
            assert [d["id"] for d in body] == READ[who], (who, body)
        else:
            expected = 200 if doc in READ[who] else 403
            assert status == expected, (who, doc, body)
            if status == 200:
                assert body["id"] == doc
    assert {who for who, *_ in results} == set(USERS)


@pytest.mark.slow
async def test_concurrent_requests_never_mix_subjects(app: FastAPI) -> None:
    for seed in range(3):
        await concurrent_requests(app, seed)


# -- the same guards on a sync Session (def endpoints, FastAPI's thread pool) -----------------


def sync_app(engine: Engine) -> FastAPI:
    """The example's guards on a sync ``Session``, behind ``def`` endpoints."""

    def get_session() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    def current_user(
        session: Annotated[Session, Depends(get_session)],
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> User | None:
        return session.scalar(sa.select(User).where(User.api_key == x_api_key))

    guards = Bastion(policy, get_subject=current_user, get_session=get_session)
    app = FastAPI()
    guards.install(app)
    readable = guards.require("doc.read", Document, id_param="doc_id")
    session_dep = Annotated[Session, Depends(get_session)]

    @app.get("/documents")
    def index(
        stmt: Annotated[Any, Depends(guards.authorized(Document, "doc.read"))], session: session_dep
    ) -> list[dict[str, int]]:
        rows = session.scalars(stmt.with_only_columns(Document.id).order_by(Document.id))
        return [{"id": doc_id} for doc_id in rows]

    @app.get("/documents/{doc_id}")
    def show(doc: Annotated[Document, Depends(readable)]) -> dict[str, Any]:
        return {"id": doc.id, "title": doc.title}

    @app.patch("/documents/{doc_id}")
    def edit(
        doc: Annotated[Document, Depends(guards.require("doc.edit", Document, id_param="doc_id"))],
        session: session_dep,
    ) -> dict[str, Any]:
        doc.title = "edited"
        session.commit()
        return {"id": doc.id, "title": doc.title}

    @app.get("/reports")
    def report(staff: Annotated[User, Depends(guards.require("reports.view"))]) -> str:
        return staff.name

    @app.get("/who-can/{doc_id}")
    def who(
        doc: Annotated[Document, Depends(readable)],
        authz: Annotated[Any, Depends(guards.get_authorizer)],
        session: session_dep,
    ) -> list[str]:
        authz.authorize(doc.owner, "doc.edit", doc)  # NotAuthorized raised by the endpoint
        return [u.name for u in session.scalars(authz.who_can("doc.edit", doc).order_by(User.id))]

    return app


@pytest.fixture
async def sync_application(async_engine: AsyncEngine, engine: Engine) -> FastAPI:
    """:func:`sync_app` on the example's data (seeded through the async engine)."""
    await setup_database(async_engine)
    return sync_app(engine)


@pytest.fixture
async def sync_client(sync_application: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    app = sync_application
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_sync_session_endpoints(sync_client: httpx.AsyncClient) -> None:
    async def status(method: str, path: str, who: str | None) -> int:
        return (await sync_client.request(method, path, headers=key(who))).status_code

    for who in USERS:
        assert await ids(sync_client, who) == READ[who]
        for doc in (1, 2, 3, 4):
            assert await status("GET", f"/documents/{doc}", who) == (
                200 if doc in READ[who] else 403
            )
        assert await status("GET", "/reports", who) == (200 if REPORTS[who] else 403)
    assert await status("GET", "/documents", None) == 401
    assert await status("GET", "/documents/9", "ada") == 404
    assert await status("PATCH", "/documents/3", "bob") == 403
    edited = await sync_client.patch("/documents/2", headers=key("bob"))
    assert edited.json() == {"id": 2, "title": "edited"}
    assert (await sync_client.get("/who-can/1", headers=key("ada"))).json() == ["ada", "bob"]
    assert (await sync_client.get("/reports", headers=key("eve"))).json() == "eve"


async def test_sync_sessions_build_filters_off_the_event_loop(
    sync_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a filter may read the subject's expired attributes (a query): on a sync session
    ``authorized()`` ran it on the event loop, where ``require()`` used the thread pool."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    original = Authorizer.filter

    def spy(self: Authorizer, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Authorizer, "filter", spy)
    assert await ids(sync_client, "ada") == READ["ada"]
    assert (
        await sync_client.get("/documents/99999999999999999999", headers=key("ada"))
    ).status_code == 404
    assert threads
    assert loop_thread not in threads


@pytest.mark.slow
async def test_sync_session_under_concurrent_requests(sync_application: FastAPI) -> None:
    await concurrent_requests(sync_application, 7)


# -- configuration and options --------------------------------------------------------------


class _Other(DeclarativeBase):
    pass


class Pair(_Other):
    __tablename__ = "pairs"
    a: Mapped[int] = mapped_column(primary_key=True)
    b: Mapped[int] = mapped_column(primary_key=True)


def test_configuration_errors_are_raised_when_the_guard_is_built() -> None:
    guards = Bastion(policy, get_subject=lambda: None, get_session=lambda: None)
    with pytest.raises(PermissionNotFound):
        guards.require("doc.publish")
    with pytest.raises(PermissionNotFound):
        guards.authorized(Document, "doc.publish")
    with pytest.raises(InvalidArgument, match="id_param"):
        guards.require("doc.read", Document)  # type: ignore[call-overload]
    with pytest.raises(InvalidArgument, match="id_param"):
        guards.require("doc.read", Document, id_param="bastion_session")
    with pytest.raises(InvalidArgument, match="need a model"):
        guards.require("doc.read", conceal=True)  # type: ignore[call-overload]
    with pytest.raises(InvalidArgument, match="not a mapped class"):
        guards.require("doc.read", dict, id_param="x")
    with pytest.raises(InvalidArgument, match="composite primary key"):
        guards.require("doc.read", Pair, id_param="a")
    with pytest.raises(InvalidArgument, match="Policy"):
        Bastion("policy", get_subject=lambda: None, get_session=lambda: None)  # type: ignore[arg-type]


def test_the_shape_options_reach_the_authorizers() -> None:
    guards = Bastion(
        policy,
        get_subject=lambda: None,
        get_session=lambda: None,
        union_branches=False,
        inline_loaded=False,
    )
    made = guards.authorizer_for(Session())
    assert (made.union_branches, made.inline_loaded) == (False, False)


@pytest.fixture
async def options_app(async_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """Guards with conceal=, context= and explain=False, on an AsyncSession."""
    await setup_database(async_engine)

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with AsyncSession(async_engine) as session:
            yield session

    async def current_user(
        session: Annotated[AsyncSession, Depends(get_session)],
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> User | None:
        return await session.scalar(sa.select(User).where(User.api_key == x_api_key))

    scoped = policy.copy()
    scoped.declare("doc.in_org")
    scoped.allow("doc.in_org", subject=User, target=Document, when=target.org_id == ctx.org)
    guards = Bastion(scoped, get_subject=current_user, get_session=get_session)
    app = FastAPI()
    install_exception_handler(app)

    def org_from_query(org: int) -> dict[str, int]:
        return {"org": org}

    conceal = guards.require("doc.read", Document, id_param="doc_id", conceal=True)
    in_org = guards.require("doc.in_org", Document, id_param="doc_id", context={"org": 1})
    from_query = guards.authorized(
        sa.select(Document.id).order_by(Document.id), "doc.in_org", context=org_from_query
    )

    @app.get("/hidden/{doc_id}")
    async def hidden(doc: Annotated[Document, Depends(conceal)]) -> int:
        return doc.id

    @app.get("/acme/{doc_id}")
    async def acme(doc: Annotated[Document, Depends(in_org)]) -> int:
        return doc.id

    @app.get("/in-org")
    async def listed(
        stmt: Annotated[sa.Select[int], Depends(from_query)],
        session: Annotated[AsyncSession, Depends(get_session)],
    ) -> list[int]:
        return list(await session.scalars(stmt))

    @app.get("/raise")
    async def raise_() -> None:
        raise NotAuthorized("someone", "doc.edit")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


async def test_conceal_answers_a_denial_like_a_missing_row(options_app: httpx.AsyncClient) -> None:
    denied = await options_app.get("/hidden/1", headers=key("dan"))
    missing = await options_app.get("/hidden/99", headers=key("dan"))
    assert (denied.status_code, denied.json()) == (missing.status_code, missing.json())
    assert denied.status_code == 404
    assert (await options_app.get("/hidden/4", headers=key("dan"))).status_code == 200
    assert (await options_app.get("/hidden/1")).status_code == 401


async def test_context_mapping_and_dependency(options_app: httpx.AsyncClient) -> None:
    assert (await options_app.get("/acme/1", headers=key("dan"))).status_code == 200
    denied = await options_app.get("/acme/3", headers=key("dan"))
    assert denied.status_code == 403
    assert denied.json() == {"detail": "Forbidden", "permission": "doc.in_org"}  # explain=False
    for org, expected in [(1, [1]), (2, [3, 4]), (3, [])]:
        response = await options_app.get(f"/in-org?org={org}", headers=key("dan"))
        assert response.json() == expected
    assert (await options_app.get("/in-org", headers=key("dan"))).status_code == 422
    schema = options_app.app.openapi()  # type: ignore[attr-defined]
    parameters = {p["name"]: p for p in schema["paths"]["/in-org"]["get"]["parameters"]}
    assert set(parameters) == {"org", "x-api-key"}
    assert parameters["org"]["in"] == "query"
    assert parameters["org"]["required"] is True


async def test_not_authorized_raised_by_an_endpoint(options_app: httpx.AsyncClient) -> None:
    response = await options_app.get("/raise")
    assert response.status_code == 403
    assert response.json() == {"detail": "Forbidden", "permission": "doc.edit"}


async def test_sessions_are_told_apart() -> None:
    # _is_async looks AsyncSession up in sys.modules (a sync-only app need not import it)
    from bastion.integrations import fastapi as integration

    engine = create_async_engine("sqlite+aiosqlite://")
    assert not integration._is_async(Session())
    assert integration._is_async(AsyncSession(engine))
    await engine.dispose()


# -- enforcement coverage -----------------------------------------------------------------------


async def test_enforcement_coverage_fails_an_endpoint_that_forgets_to_authorize(
    async_engine: AsyncEngine,
) -> None:
    from bastion import UnauthorizedLoad

    await setup_database(async_engine)
    enforced = create_app(engine=async_engine, enforce="raise")
    transport = httpx.ASGITransport(app=enforced)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert await ids(client, "bob") == READ["bob"]  # filtered endpoints pass
        with pytest.raises(UnauthorizedLoad) as caught:
            await client.get("/stats/documents", headers=key("bob"))
        assert caught.value.model.__name__ == "Document"
        assert "app.py" in caught.value.location
    plain = httpx.ASGITransport(app=create_app(engine=async_engine))
    async with httpx.AsyncClient(transport=plain, base_url="http://test") as client:
        response = await client.get("/stats/documents", headers=key("bob"))
        assert response.status_code == 200
