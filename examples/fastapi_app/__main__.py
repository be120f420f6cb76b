"""``python -m examples.fastapi_app [--serve]``: a walkthrough through httpx, or a server."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx

from .app import create_app, database_url, setup_database

#: (caller, method, path, body): what the walkthrough asks
TOUR = [
    (None, "GET", "/documents", None),
    ("bob", "GET", "/documents", None),
    ("dan", "GET", "/documents", None),
    ("dan", "GET", "/documents/1", None),
    ("dan", "GET", "/documents/3", None),
    ("ada", "GET", "/documents/1", None),
    ("ada", "GET", "/documents/99", None),
    ("ada", "PATCH", "/documents/3", {"title": "mine now"}),
    ("ada", "PATCH", "/documents/1", {"title": "acme roadmap"}),
    ("ada", "GET", "/documents/1/who-can?permission=doc.edit", None),
    ("bob", "GET", "/reports/documents-per-organisation", None),
    ("eve", "GET", "/reports/documents-per-organisation", None),
    ("ada", "GET", "/reports/documents-per-organisation", None),
    ("bob", "DELETE", "/documents/1", None),
    ("eve", "GET", "/audit", None),
    ("dan", "GET", "/audit", None),
]


async def tour() -> None:
    app = create_app()
    await setup_database(app.state.engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        for who, method, path, body in TOUR:
            headers = {"X-API-Key": f"{who}-key"} if who else {}
            response = await client.request(method, path, headers=headers, json=body)
            print(f"{who or 'nobody':<6} {method:<6} {path:<45} {response.status_code}")
            if response.content:
                print(f"       {json.dumps(response.json())[:300]}")
    await app.state.engine.dispose()


def main(argv: list[str]) -> int:
    print(f"database: {database_url()}")
    if "--serve" not in argv:
        asyncio.run(tour())
        return 0
    try:
        import uvicorn
    except ImportError:
        print("--serve needs uvicorn: pip install uvicorn", file=sys.stderr)
        return 1
    uvicorn.run(create_app(), host="127.0.0.1", port=8000)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
