"""INSERT … ignore-if-exists for every supported backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, insert
from sqlalchemy.dialects import mysql, postgresql, sqlite


def insert_ignore(dialect: str, model: Any, values: dict[str, Any]) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(model).values(**values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(model).values(**values).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(model).values(**values).prefix_with("IGNORE")
    return insert(model).values(**values)
