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

Rows loaded before versioning existed have a NULL `object_updated_at`: they rank below every
version, but only once the same table holds a row of the conversation's newest version, since until
a conversation is read again they are the only rows it has.
"""

from __future__ import annotations

import logging
from typing import Any

import dlt

from ..commbox.tables import VERSION_COLUMN, VERSIONED_TABLES

__all__ = ["VERSIONED_TABLES", "keep_newest", "superseded_sql"]

logger = logging.getLogger("commbox.versions")


def superseded_sql(table: str, qualified: str, objects: str) -> str:
    """The statement deleting the superseded rows of `table`.

    Args:
        table: `objects` or one of `VERSIONED_TABLES`.
        qualified: the table's name qualified with its dataset, as the destination quotes it.
        objects: the qualified name of `objects`.

    Returns:
        One `delete ... where exists` statement, in SQL that DuckDB, PostgreSQL and BigQuery share.
    """
    if table == "objects":
        return (
            f"delete from {objects} as r where exists ("
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
        f"delete from {qualified} as r where "
        f"(r.{VERSION_COLUMN} is not null and exists (select 1 from {objects} as o "
        f"where o.object_id = r.object_id and o.updated_at > r.{VERSION_COLUMN})) "
        f"or (r.{VERSION_COLUMN} is null and exists ({newest_here}))"
    )


def keep_newest(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Delete the superseded versions from the pipeline's dataset; run it after every load.

    Library users who load with `pipeline.run(commbox_source())` call it themselves afterwards;
    `run_pipeline` does. Tables not loaded yet, and versioned tables a warehouse does not have the
    version column in yet (a resource left out since versioning came), are skipped.

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
        for table in wanted:
            columns = stored.get(table) or {}
            if table != "objects" and VERSION_COLUMN not in columns:
                continue
            sql = superseded_sql(table, client.make_qualified_table_name(table), objects)
            deleted[table] = _affected(client, sql)
    if any(deleted.values()):
        logger.info(
            "newest wins: deleted superseded versions (%s)",
            ", ".join(f"{table}={count}" for table, count in deleted.items() if count),
        )
    return deleted


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
