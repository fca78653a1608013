"""Newest wins: delete the rows of superseded conversation versions, after every load.

Every row of `objects`, `childs`, `activities` and `transcripts` carries the version of the
conversation it was read at (`objects.updated_at`, and `object_updated_at` on the others), and the
version is part of each primary key, so a load never replaces a newer version by an older one: it
adds rows. `keep_newest` then deletes, per table, what a newer version supersedes:

- an `objects` row, when a row of the same `object_id` with a later `updated_at` exists;
- a `childs`/`activities`/`transcripts` row, when `objects` holds a later `updated_at` for its
  `object_id`.

Deleting superseded rows is idempotent and commutes with loads, so however scheduled runs and
backfills interleave (a backfill that read older versions loading after a run that loaded newer
ones), once the last of them has cleaned up each conversation is in its newest version with exactly
that version's messages, activities and transcript, with no lock. Plain `delete ... where exists`
runs alike on DuckDB, PostgreSQL and BigQuery.

A run's checkpoint slices clean up only the conversations their own load wrote (`load_ids`: every
row a dlt load writes carries its `_dlt_load_id`), so a slice's cleanup costs the slice, not the
warehouse: deleting over the whole table after every slice scanned all of `childs` against all of
`objects` each time, and its working memory grew with the warehouse (bench/README.md, "Memory").
A superseded row always belongs to a conversation the superseding load wrote, so the slice's own
conversations are all it can have superseded; the run's last slice, and the views, still clean up the
whole table, which is what removes what another pipeline's interrupted load left behind.

Rows loaded before versioning existed have a NULL `object_updated_at`: they rank below every
version, but only once the same table holds a row of the conversation's newest version, since until
a conversation is read again they are the only rows it has.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import dlt

from ..commbox.tables import VERSION_COLUMN, VERSIONED_TABLES

__all__ = ["VERSIONED_TABLES", "keep_newest", "loaded_conversations_sql", "superseded_sql"]

logger = logging.getLogger("commbox.versions")

LOAD_ID_COLUMN = "_dlt_load_id"
# dlt's load ids are a unix time with its fraction: they are written into the statement as literals,
# so nothing else is.
_LOAD_ID = re.compile(r"\d{1,20}(\.\d{1,20})?")


def loaded_conversations_sql(objects: str, load_ids: Sequence[str]) -> str:
    """A subquery of the `object_id`s the loads `load_ids` wrote to `objects`.

    Raises:
        ValueError: a load id that is not one dlt makes (digits with a fraction).
    """
    if not load_ids:
        raise ValueError("no load ids")
    for load_id in load_ids:
        if not _LOAD_ID.fullmatch(str(load_id)):
            raise ValueError(f"{load_id!r} is not a dlt load id")
    listed = ", ".join(f"'{load_id}'" for load_id in load_ids)
    return f"select object_id from {objects} where {LOAD_ID_COLUMN} in ({listed})"


def superseded_sql(table: str, qualified: str, objects: str, loaded: str | None = None) -> str:
    """The statement deleting the superseded rows of `table`.

    Args:
        table: `objects` or one of `VERSIONED_TABLES`.
        qualified: the table's name qualified with its dataset, as the destination quotes it.
        objects: the qualified name of `objects`.
        loaded: a subquery of the conversations to clean up (`loaded_conversations_sql`); None: all.

    Returns:
        One `delete ... where exists` statement, in SQL that DuckDB, PostgreSQL and BigQuery share.
    """
    only = f"r.object_id in ({loaded}) and " if loaded else ""
    if table == "objects":
        return (
            f"delete from {objects} as r where {only}exists ("
            f"select 1 from {objects} as n where n.object_id = r.object_id and n.updated_at is not null "
            "and (r.updated_at is null or n.updated_at > r.updated_at))"
        )
    if table not in VERSIONED_TABLES:
        raise ValueError(f"{table!r} is not a versioned table")
    # A row of the newest version: no objects row of its conversation is later than it.
    newest_here = (
        f"select 1 from {qualified} as v where v.object_id = r.object_id and v.{VERSION_COLUMN} is not null "
        f"and not exists (select 1 from {objects} as w where w.object_id = v.object_id "
        f"and w.updated_at > v.{VERSION_COLUMN})"
    )
    return (
        f"delete from {qualified} as r where {only}("
        f"(r.{VERSION_COLUMN} is not null and exists (select 1 from {objects} as o "
        f"where o.object_id = r.object_id and o.updated_at > r.{VERSION_COLUMN})) "
        f"or (r.{VERSION_COLUMN} is null and exists ({newest_here})))"
    )


def keep_newest(pipeline: dlt.Pipeline, load_ids: Sequence[str] | None = None) -> dict[str, int]:
    """Delete the superseded versions from the pipeline's dataset; run it after every load.

    Library users who load with `pipeline.run(commbox_source())` call it themselves afterwards;
    `run_pipeline` does. Tables not loaded yet, and versioned tables a warehouse does not have the
    version column in yet (a resource left out since versioning came), are skipped.

    Args:
        load_ids: clean up only the conversations these loads wrote (a checkpoint slice's own);
            None: every conversation. The whole table is cleaned up anyway when `objects` has rows
            without a load id (a load that wrote none could not be told apart).

    Returns:
        Rows deleted per table, for the log.
    """
    wanted = ["objects", *VERSIONED_TABLES]
    with pipeline.destination_client() as job_client:
        stored = dict(job_client.get_storage_tables(wanted))  # type: ignore[attr-defined]
    if not stored.get("objects"):
        return {}
    deleted: dict[str, int] = {}
    with pipeline.sql_client() as client:
        objects = client.make_qualified_table_name("objects")
        loaded = None
        if load_ids is not None and _every_row_has_a_load_id(client, objects, stored["objects"]):
            if not load_ids:
                return {}
            loaded = loaded_conversations_sql(objects, load_ids)
        for table in wanted:
            columns = stored.get(table) or {}
            if table != "objects" and VERSION_COLUMN not in columns:
                continue
            sql = superseded_sql(table, client.make_qualified_table_name(table), objects, loaded)
            deleted[table] = _affected(client, sql)
    if any(deleted.values()):
        logger.info(
            "newest wins: deleted superseded versions (%s)",
            ", ".join(f"{table}={count}" for table, count in deleted.items() if count),
        )
    return deleted


def _every_row_has_a_load_id(client: Any, objects: str, columns: Any) -> bool:
    """Whether every `objects` row says which load wrote it, so a load's conversations can be found."""
    if LOAD_ID_COLUMN not in columns:
        return False
    rows = client.execute_sql(f"select count(*) from {objects} where {LOAD_ID_COLUMN} is null")
    return bool(rows) and rows[0][0] == 0


def _affected(client: Any, sql: str) -> int:
    """Run a delete and return how many rows it removed (-1 where the driver does not say)."""
    with client.execute_query(sql) as cursor:
        count = getattr(cursor, "rowcount", None)
        if count is None or count < 0:
            # DuckDB answers a DELETE with one row holding the count.
            try:
                row = cursor.fetchone()
            except Exception:
                return -1
            return int(row[0]) if row else -1
        return int(count)
