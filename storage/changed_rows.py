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
        values = _changed_values(state)
        if values is None:
            continue
        done.append(state)
        if values:
            table, primary_key = _table_and_key(state.mapper)
            values["_pk"] = state.dict[primary_key]
            groups.setdefault((table, tuple(sorted(values))), []).append(values)
    for (table, keys), rows in groups.items():
        await sqlite_direct.executemany(session, _statement(table, keys), rows)
    # What was written is now what the database holds: mark it so, as the unit of work does
    # after its own flush (expunging the rows instead costs a cascade walk per row).
    InstanceState._commit_all_states([(state, state.dict) for state in done], session.sync_session.identity_map)


def _changed_values(state: Any) -> dict[str, Any] | None:
    """Changed column values by column name; None when a change is not a plain column's."""
    values: dict[str, Any] = {}
    params = _params_of(state.mapper)
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


def _table_and_key(mapper: Mapper[Any]) -> tuple[Table, str]:
    """The mapper's table and its primary key's attribute (looked up once)."""
    found = _tables.get(mapper)
    if found is None:
        (primary_key,) = mapper.primary_key
        found = _tables[mapper] = (cast(Table, mapper.local_table), cast(str, primary_key.key))
    return found


def _params_of(mapper: Mapper[Any]) -> dict[str, str]:
    """The UPDATE parameter of each attribute that maps one plain column (looked up once)."""
    params = _params.get(mapper)
    if params is None:
        params = {prop.key: _PARAM + prop.columns[0].key for prop in mapper.attrs
                  if isinstance(prop, ColumnProperty) and len(prop.columns) == 1}
        _params[mapper] = params
    return params


# Parameters may not share a column's name in an UPDATE's SET clause.
_PARAM = "set_"
_statements: dict[tuple[Table, tuple[str, ...]], Update] = {}
_params: dict[Mapper[Any], dict[str, str]] = {}
_tables: dict[Mapper[Any], tuple[Table, str]] = {}


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
