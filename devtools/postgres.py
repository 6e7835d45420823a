"""Fresh databases on the local PostgreSQL (127.0.0.1:5432, trust auth) for a Prefect server."""

from __future__ import annotations

import subprocess

PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c"]


def fresh_database(name: str) -> str:
    """Drop and create database `name`; return its SQLAlchemy URL for Prefect."""
    drop_database(name)
    subprocess.run([*PSQL, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    """Drop database `name`, closing any connection left to it."""
    subprocess.run(
        [*PSQL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True, capture_output=True
    )
