"""Adapters for web frameworks (Flask, FastAPI): thin layers over the public API."""
