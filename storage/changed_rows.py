"""Write what changed on loaded rows with one executemany per table and set of columns.

The message path loads a group of customers and conversations, stages change a few columns on
each (the push window, the last sequence number …), and everything is written at once. The
unit of work would do the same with far more Python per row; this writes the changed columns
by primary key and marks the rows clean, so the session's flush writes only what is new.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ColumnProperty, Mapper
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql.dml import Update

from storage import sqlite_direct


async def write_changed(session: AsyncSession, objects: Iterable[object]) -> None:
    """UPDATE the changed columns of these persistent objects, which are then clean (the SQLite
    group writer's transaction: see storage.sqlite_direct).

    Objects the unit of work must handle itself (new, deleted, or changed in anything but a
    plain column) stay in the session for its flush.
    """
    groups: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    done: list[InstanceState[Any]] = []
    for obj in objects:
        state = instance_state(obj)  # what inspect() finds, without its dispatch
        if not state.committed_state:  # nothing changed: nothing to write or to mark
            continue
        if not state.persistent:  # (a deleted object is not persistent)
            continue
        mapped = _mapped(state.mapper)
        values = _changed_values(state, mapped.params)
        if values is None:
            continue
        done.append(state)
        if values:
            values["_pk"] = state.dict[mapped.primary_key]
            groups.setdefault((mapped.table, tuple(sorted(values))), []).append(values)
    for (table, keys), rows in groups.items():
        await sqlite_direct.executemany(session, _statement(table, keys), rows)
    # What was written is now what the database holds: mark it so, as the unit of work does
    # after its own flush (expunging the rows instead costs a cascade walk per row).
    InstanceState._commit_all_states([(state, state.dict) for state in done], session.sync_session.identity_map)


def _changed_values(state: Any, params: dict[str, str]) -> dict[str, Any] | None:
    """Changed column values by UPDATE parameter; None when a change is not a plain column's."""
    values: dict[str, Any] = {}
    current = state.dict
    for key, before in state.committed_state.items():
        param = params.get(key)
        if param is None:
            return None
        after = current.get(key, NO_VALUE)
        if after is NO_VALUE:
            return None
        if before is not NO_VALUE and before == after:
            continue
        values[param] = after
    return values


class _Mapped:
    """What writing a mapper's rows needs, looked up once: its table, its primary key's
    attribute, and the UPDATE parameter of each attribute that maps one plain column."""

    __slots__ = ("table", "primary_key", "params")

    def __init__(self, mapper: Mapper[Any]):
        (primary_key,) = mapper.primary_key
        self.table = cast(Table, mapper.local_table)
        self.primary_key = cast(str, primary_key.key)
        self.params = {prop.key: _PARAM + prop.columns[0].key for prop in mapper.attrs
                       if isinstance(prop, ColumnProperty) and len(prop.columns) == 1}


def _mapped(mapper: Mapper[Any]) -> _Mapped:
    found = _mappers.get(mapper)
    if found is None:
        found = _mappers[mapper] = _Mapped(mapper)
    return found


# Parameters may not share a column's name in an UPDATE's SET clause.
_PARAM = "set_"
_statements: dict[tuple[Table, tuple[str, ...]], Update] = {}
_mappers: dict[Mapper[Any], _Mapped] = {}


def _statement(table: Table, keys: tuple[str, ...]) -> Update:
    # Built once per column set: constructing a statement costs more than SQLite running it.
    statement = _statements.get((table, keys))
    if statement is None:
        (primary_key,) = table.primary_key.columns
        columns = [key.removeprefix(_PARAM) for key in keys if key != "_pk"]
        statement = (update(table).where(primary_key == bindparam("_pk", type_=primary_key.type))
                     .values({column: bindparam(_PARAM + column, type_=table.c[column].type)
                              for column in columns}))
        _statements[(table, keys)] = statement
    return statement
