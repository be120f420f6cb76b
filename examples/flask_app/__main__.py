"""``python -m examples.flask_app``: create and fill the database if needed, then serve."""

from __future__ import annotations

from . import create_app, init_db

app = create_app()
init_db(app.extensions["example"]["engine"])
app.run(host="127.0.0.1", port=5000)
