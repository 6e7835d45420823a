"""Fresh databases on the local PostgreSQL (127.0.0.1:5432, trust auth) for a Prefect server."""

from __future__ import annotations

import subprocess


def fresh_database(name: str) -> str:
    """Drop and create database `name`; return its SQLAlchemy URL for Prefect."""
    for statement in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", statement],
            check=True,
            capture_output=True,
        )
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
