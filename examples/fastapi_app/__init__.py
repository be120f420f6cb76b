"""bastion's FastAPI example: organisations, members and documents behind bastion guards.

``python -m examples.fastapi_app`` walks through the endpoints with httpx (no server needed);
``python -m examples.fastapi_app --serve`` runs uvicorn on 127.0.0.1:8000 (``pip install
uvicorn``). ``DATABASE_URL`` selects the database (default: a SQLite file; a ``postgresql://``
URL is driven by asyncpg).
"""

from .app import bastion, create_app, database_url, router, setup_database

__all__ = ["bastion", "create_app", "database_url", "router", "setup_database"]
