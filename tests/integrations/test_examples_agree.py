"""The Flask and the FastAPI example answer alike: one scenario table, both test clients.

Both apps run on ``examples/shared`` (the same models, policy and data); only the framework glue
differs. Each scenario is a caller (an ``X-API-Key``, which both apps accept), an action and a
document; its expected outcome is ``OK`` (the app's success answer: Flask's page or redirect,
FastAPI's 200 or 204) or the status of a denial (401, 403, 404). The lists (rows and the actions
shown on each row: Flask's Edit/Delete buttons, FastAPI's ``actions``) and the report are
compared too. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import flask
import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the examples are not an installed package
    sys.path.insert(0, str(ROOT))

from examples import fastapi_app, flask_app  # noqa: E402
from examples.shared import Base, api_key_of, init_db  # noqa: E402

Action = Literal["read", "edit", "delete", "reports", "audit"]
OK: Literal["ok"] = "ok"
Outcome = Literal["ok", 401, 403, 404] | int  # any other status is a failure to report
Rows = dict[int, frozenset[str]]  # a list page: document id -> the caller's actions on it


@dataclass(frozen=True)
class Scenario:
    who: str | None  # a user's name, "mallory" (an unknown key) or None (no key)
    action: Action
    doc: int | None  # None for the object-less actions
    expected: Outcome


# -- the table ----------------------------------------------------------------------------------

DOCS = (1, 2, 3, 4, 99)  # 99 does not exist
USERS = ("ada", "bob", "eve", "dan")
NOBODY = (None, "mallory")  # no key; a key nobody has
TITLES = {1: "acme roadmap", 2: "bob's notes", 3: "globex budget", 4: "press release", 99: "x"}

#: action -> user -> the outcome on each of DOCS (the table of examples/shared/__init__.py)
ON_DOCUMENTS: dict[Action, dict[str, tuple[Outcome, ...]]] = {
    "read": {
        "ada": (OK, 403, 403, OK, 404),  # admin of acme (role); 4 is public
        "bob": (OK, OK, 403, OK, 404),  # owner of 1 and 2
        "eve": (403, 403, OK, OK, 404),  # owner of 3 and 4
        "dan": (403, 403, OK, OK, 404),  # a stored grant in globex
    },
    "edit": {
        "ada": (OK, 403, 403, 403, 404),
        "bob": (OK, OK, 403, 403, 404),  # owner
        "eve": (403, 403, OK, OK, 404),
        "dan": (403, 403, 403, 403, 404),  # reads 3, may not edit it
    },
    "delete": {
        "ada": (OK, 403, 403, 403, 404),  # admin of acme
        "bob": (403, 403, 403, 403, 404),  # owner of 1, but a viewer of acme
        "eve": (403, 403, OK, OK, 404),
        "dan": (403, 403, 403, 403, 404),
    },
}
#: action -> user -> outcome, for the object-less permissions
WITHOUT_DOCUMENT: dict[Action, dict[str, Outcome]] = {
    "reports": {"ada": OK, "bob": 403, "eve": OK, "dan": 403},  # a stored grant; staff
    "audit": {"ada": 403, "bob": 403, "eve": 403, "dan": OK},  # through the group auditors
}


def scenarios() -> list[Scenario]:
    """Every caller x action x document, in an order whose outcomes do not depend on each
    other: the allowed deletions last (each on a different document), after every denied one."""
    table = [
        Scenario(who, action, doc, outcome)
        for action, by_user in ON_DOCUMENTS.items()
        for who, outcomes in by_user.items()
        for doc, outcome in zip(DOCS, outcomes, strict=True)
    ]
    table += [
        Scenario(who, action, None, outcome)
        for action, by_user in WITHOUT_DOCUMENT.items()
        for who, outcome in by_user.items()
    ]
    table += [
        Scenario(who, action, doc, 401) for who in NOBODY for action in ON_DOCUMENTS for doc in DOCS
    ]
    table += [Scenario(who, action, None, 401) for who in NOBODY for action in WITHOUT_DOCUMENT]
    return sorted(table, key=lambda s: s.action == "delete" and s.expected == OK)


R, E, D = "doc.read", "doc.edit", "doc.delete"
#: user -> the list page, before and after the allowed deletions (of documents 1, 3 and 4)
LISTS_BEFORE: dict[str, Rows] = {
    "ada": {1: frozenset({R, E, D}), 4: frozenset({R})},
    "bob": {1: frozenset({R, E}), 2: frozenset({R, E}), 4: frozenset({R})},
    "eve": {3: frozenset({R, E, D}), 4: frozenset({R, E, D})},
    "dan": {3: frozenset({R}), 4: frozenset({R})},
}
LISTS_AFTER: dict[str, Rows] = {"ada": {}, "bob": {2: frozenset({R, E})}, "eve": {}, "dan": {}}
REPORT = {"acme": 1, "globex": 2}


# -- driving the two apps -----------------------------------------------------------------------


class ExampleClient(Protocol):
    """One example app behind its framework's test client."""

    name: str

    async def outcome(self, scenario: Scenario) -> Outcome: ...
    async def rows(self, who: str) -> Rows: ...
    async def report(self, who: str) -> dict[str, int]: ...


def headers(who: str | None) -> dict[str, str]:
    return {} if who is None else {"X-API-Key": api_key_of(who)}


def normalise(status: int, success: int) -> Outcome:
    return OK if status == success else status


class FlaskExample:
    """examples/flask_app through Flask's test client (HTML pages, redirects after a POST)."""

    name = "flask"
    SUCCESS: Mapping[Action, int] = {
        "read": 200,
        "edit": 302,
        "delete": 302,
        "reports": 200,
        "audit": 200,
    }

    def __init__(self, app: flask.Flask) -> None:
        self.client = app.test_client()

    async def outcome(self, scenario: Scenario) -> Outcome:
        send = {"headers": headers(scenario.who)}
        doc = scenario.doc
        if scenario.action == "read":
            response = self.client.get(f"/documents/{doc}", **send)
        elif scenario.action == "edit":  # the same title and body: the table's order is kept
            form = {"title": TITLES[doc or 0], "body": ""}
            response = self.client.post(f"/documents/{doc}/edit", data=form, **send)
        elif scenario.action == "delete":
            response = self.client.post(f"/documents/{doc}/delete", **send)
        else:
            response = self.client.get(f"/{scenario.action}", **send)
        return normalise(response.status_code, self.SUCCESS[scenario.action])

    async def rows(self, who: str) -> Rows:
        response = self.client.get("/documents", headers=headers(who))
        assert response.status_code == 200, response.text
        html = response.text
        edit = {int(n) for n in re.findall(r'class="edit" href="/documents/(\d+)/edit"', html)}
        delete = {int(n) for n in re.findall(r'class="delete" action="/documents/(\d+)/', html)}
        listed = [int(n) for n in re.findall(r'<a href="/documents/(\d+)"', html)]
        return {
            n: frozenset({R} | ({E} if n in edit else set()) | ({D} if n in delete else set()))
            for n in listed
        }

    async def report(self, who: str) -> dict[str, int]:
        response = self.client.get("/reports", headers=headers(who))
        assert response.status_code == 200, response.text
        cells = re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td></tr>", response.text)
        return {name: int(count) for name, count in cells}


class FastAPIExample:
    """examples/fastapi_app through httpx's ASGI transport (JSON)."""

    name = "fastapi"
    SUCCESS: Mapping[Action, int] = {
        "read": 200,
        "edit": 200,
        "delete": 204,
        "reports": 200,
        "audit": 200,
    }
    PATHS: Mapping[Action, str] = {
        "reports": "/reports/documents-per-organisation",
        "audit": "/audit",
    }

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def outcome(self, scenario: Scenario) -> Outcome:
        send: dict[str, Any] = {"headers": headers(scenario.who)}
        doc = scenario.doc
        if scenario.action == "read":
            response = await self.client.get(f"/documents/{doc}", **send)
        elif scenario.action == "edit":
            body = {"title": TITLES[doc or 0], "body": ""}
            response = await self.client.patch(f"/documents/{doc}", json=body, **send)
        elif scenario.action == "delete":
            response = await self.client.delete(f"/documents/{doc}", **send)
        else:
            response = await self.client.get(self.PATHS[scenario.action], **send)
        return normalise(response.status_code, self.SUCCESS[scenario.action])

    async def rows(self, who: str) -> Rows:
        response = await self.client.get("/documents", headers=headers(who))
        assert response.status_code == 200, response.text
        return {row["id"]: frozenset(row["actions"]) for row in response.json()}

    async def report(self, who: str) -> dict[str, int]:
        response = await self.client.get(self.PATHS["reports"], headers=headers(who))
        assert response.status_code == 200, response.text
        return dict(response.json())


@dataclass
class Run:
    """What one app answered."""

    outcomes: dict[Scenario, Outcome]
    lists_before: dict[str, Rows]
    lists_after: dict[str, Rows]
    report: dict[str, int]


async def run(app: ExampleClient, table: Iterable[Scenario]) -> Run:
    """The lists and the report, then every scenario in order, then the lists again."""
    before = {who: await app.rows(who) for who in USERS}
    report = await app.report("eve")
    outcomes = {scenario: await app.outcome(scenario) for scenario in table}
    after = {who: await app.rows(who) for who in USERS}
    return Run(outcomes, before, after, report)


def disagreements(table: Iterable[Scenario], runs: Mapping[str, Run]) -> list[str]:
    """One line per scenario where an app's outcome is not the expected one."""
    lines = []
    for scenario in table:
        answers = {name: run.outcomes[scenario] for name, run in runs.items()}
        if any(answer != scenario.expected for answer in answers.values()):
            lines.append(f"{scenario}: {answers}")
    return lines


# -- the tests ----------------------------------------------------------------------------------


async def test_flask_and_fastapi_examples_answer_the_scenario_table_alike(
    engine: Engine, async_engine: AsyncEngine
) -> None:
    table = scenarios()
    runs: dict[str, Run] = {}
    # One app after the other on the same (reset) database: the scenarios delete documents.
    init_db(engine)
    runs["flask"] = await run(
        FlaskExample(flask_app.create_app(engine=engine, TESTING=True)), table
    )
    Base.metadata.drop_all(engine)
    await fastapi_app.setup_database(async_engine)
    transport = httpx.ASGITransport(app=fastapi_app.create_app(engine=async_engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        runs["fastapi"] = await run(FastAPIExample(client), table)

    wrong = disagreements(table, runs)
    assert not wrong, "\n".join(wrong)
    assert runs["flask"].outcomes == runs["fastapi"].outcomes
    for name, answered in runs.items():
        assert answered.lists_before == LISTS_BEFORE, name
        assert answered.lists_after == LISTS_AFTER, name
        assert answered.report == REPORT, name


def test_the_table_covers_every_caller_action_and_document() -> None:
    table = scenarios()
    keys = {(s.who, s.action, s.doc) for s in table}
    assert len(keys) == len(table)  # no scenario twice
    callers = (*USERS, *NOBODY)
    assert len(table) == len(callers) * (len(ON_DOCUMENTS) * len(DOCS) + len(WITHOUT_DOCUMENT))
    allowed_deletions = [s for s in table if s.action == "delete" and s.expected == OK]
    assert table[-len(allowed_deletions) :] == allowed_deletions  # last ...
    assert len({s.doc for s in allowed_deletions}) == len(allowed_deletions)  # ... one per document
    deleted = {s.doc for s in allowed_deletions}
    for who, rows in LISTS_BEFORE.items():  # the lists agree with the read and delete columns
        readable = {d for d, o in zip(DOCS, ON_DOCUMENTS["read"][who], strict=True) if o == OK}
        assert set(rows) == readable, who
        assert set(LISTS_AFTER[who]) == readable - deleted, who


def test_disagreements_name_the_scenario_and_each_answer() -> None:
    scenario = Scenario("dan", "read", 3, OK)
    runs = {
        "flask": Run({scenario: OK}, {}, {}, {}),
        "fastapi": Run({scenario: 403}, {}, {}, {}),
    }
    assert disagreements([scenario], runs) == [f"{scenario}: {{'flask': 'ok', 'fastapi': 403}}"]
    runs["fastapi"].outcomes[scenario] = OK
    assert disagreements([scenario], runs) == []
