"""What keeps a long run's memory flat (issue 15, target 3), checked where it can be checked
without measuring memory: the DuckDB connections dlt loads with carry the pipeline's memory ceiling
(and the user's own settings over it), and a checkpoint slice's cleanup touches only the
conversations its own load wrote.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from pipelines.commbox import commbox_source
from pipelines.commbox.config import ConfigError
from pipelines.ops.runner import DUCKDB_GLOBAL_CONFIG, make_pipeline, preferred_file_format
from pipelines.ops.versions import keep_newest
from tests.helpers import load, make_test_pipeline, query, source_settings
from tests.test_newest_wins import extract_backfill, history_range, stale_versions, streams


def _reported(pipeline: Any, *settings: str) -> tuple[Any, ...]:
    """The settings as the connection dlt hands out for this pipeline's destination reports them."""
    with pipeline.sql_client() as client:
        return tuple(
            client.execute_sql(f"select {', '.join(f'current_setting({s!r})' for s in settings)}")[0]
        )


def _as_duckdb_says(**settings: Any) -> tuple[Any, ...]:
    """How DuckDB itself reports the same settings (it rounds `64MB` to `61.0 MiB`)."""
    connection = duckdb.connect()
    try:
        for key, value in settings.items():
            connection.execute(f"set {key} = '{value}'")
        return connection.execute(
            f"select {', '.join(f'current_setting({key!r})' for key in settings)}"
        ).fetchone()
    finally:
        connection.close()


@pytest.fixture
def duckdb_file(tmp_path, monkeypatch) -> str:
    path = str(tmp_path / "warehouse.duckdb")
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", path)
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", raising=False)
    return path


def test_the_destination_connection_has_the_pipelines_memory_limit(duckdb_file, tmp_path):
    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(tmp_path / "p"))
    limit = DUCKDB_GLOBAL_CONFIG["memory_limit"]
    assert _reported(pipeline, "memory_limit") == _as_duckdb_says(memory_limit=limit)
    # not DuckDB's own default (80% of the machine)
    assert _reported(pipeline, "memory_limit") != _as_duckdb_says(memory_limit="80%")


def test_the_users_global_config_wins_over_the_pipelines(duckdb_file, tmp_path, monkeypatch):
    """Before, credentials built by the runner dropped whatever `global_config` the user set."""
    monkeypatch.setenv(
        "DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", '{"memory_limit": "1GB", "threads": 1}'
    )
    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(tmp_path / "p"))
    assert _reported(pipeline, "memory_limit", "threads") == _as_duckdb_says(memory_limit="1GB", threads=1)


def test_a_global_config_that_is_not_a_table_is_one_line_naming_the_key(duckdb_file, tmp_path, monkeypatch):
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", "memory_limit=1GB")
    with pytest.raises(ConfigError) as raised:
        make_pipeline(destination="duckdb", pipelines_dir=str(tmp_path / "p"))
    assert str(raised.value).startswith("destination.duckdb.credentials.global_config:")
    assert "\n" not in str(raised.value)


def test_a_slices_cleanup_touches_only_the_conversations_its_load_wrote(sim_factory, tmp_path):
    """Stale rows another pipeline left (a backfill killed right after its load) stay through a
    slice's cleanup unless that slice's load wrote their conversation; the whole-table cleanup, and
    one with a load that cannot be told apart, removes them."""
    sim = sim_factory()
    scheduled = make_test_pipeline(tmp_path)
    load(scheduled, sim, stream_ids=streams(sim))
    backfill = extract_backfill(tmp_path, None, sim, "commbox_backfill", history_range(sim))
    sim.clock.advance(60)
    sim.mutate(messages=40, status_changes=20)
    load(scheduled, sim, stream_ids=streams(sim))
    backfill.load().raise_on_failed_jobs()  # older versions, never cleaned up
    left_behind = stale_versions(scheduled, sim)
    assert left_behind > 0

    sim.clock.advance(60)
    sim.mutate(messages=10)
    sim.clock.advance(600)  # past the safety margin, as `load` does
    source = commbox_source(**source_settings(sim, stream_ids=streams(sim)))
    info = scheduled.run(source, loader_file_format=preferred_file_format(scheduled))
    info.raise_on_failed_jobs()
    listed = ", ".join(f"'{load_id}'" for load_id in info.loads_ids)
    written = {
        row[0] for row in query(scheduled, f"select object_id from objects where _dlt_load_id in ({listed})")
    }
    stale_before = _stale_objects(scheduled)
    assert written and stale_before - written, "the test needs stale conversations outside this load"

    keep_newest(scheduled, info.loads_ids)
    assert _stale_objects(scheduled) == stale_before - written

    # A row without a load id (dlt makes the column NOT NULL; a warehouse loaded by other means may
    # not): the slice's conversations cannot be told apart, so the whole table is cleaned up.
    query(scheduled, "alter table objects alter column _dlt_load_id drop not null")
    query(
        scheduled,
        "update objects set _dlt_load_id = null where object_id = (select min(object_id) from objects)",
    )
    keep_newest(scheduled, info.loads_ids)
    assert stale_versions(scheduled, sim) == 0


def _stale_objects(pipeline: Any) -> set[int]:
    """Conversations with more than one version in `objects`."""
    rows = query(pipeline, "select object_id from objects group by object_id having count(*) > 1")
    return {row[0] for row in rows}


def test_the_views_are_built_with_settings_of_their_own_and_the_loads_come_back(duckdb_file, tmp_path):
    """At 100,000 conversations the models ran out of memory under the load's limit with DuckDB's
    default threads (bench/README.md, "Findings: memory"): they get one thread under a larger limit,
    and the connection has the load's settings again afterwards."""
    from pipelines.commbox.settings import DUCKDB_VIEWS_MEMORY_LIMIT, DUCKDB_VIEWS_THREADS
    from pipelines.reporting.views import _duckdb_views_settings

    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(tmp_path / "p"))
    with pipeline.sql_client() as client:
        load_settings = _settings(client)
        assert load_settings[0] == _as_duckdb_says(memory_limit=DUCKDB_GLOBAL_CONFIG["memory_limit"])[0]
        with _duckdb_views_settings(client, "duckdb"):
            assert _settings(client) == _as_duckdb_says(
                memory_limit=DUCKDB_VIEWS_MEMORY_LIMIT, threads=DUCKDB_VIEWS_THREADS
            )
        assert _settings(client) == load_settings
        # another warehouse's dialect: nothing is set
        with _duckdb_views_settings(client, "postgres") as applied:
            assert applied == {}


def test_the_marts_are_read_with_the_settings_they_were_built_with(duckdb_file, tmp_path):
    # Most marts are views: reading one runs its query over every conversation, which under the
    # load's limit ran out of memory at 100,000 conversations (`make bench`, scenario 5).
    from pipelines.commbox.settings import DUCKDB_VIEWS_MEMORY_LIMIT, DUCKDB_VIEWS_THREADS
    from pipelines.reporting.views import reading_views

    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(tmp_path / "p"))
    with reading_views(pipeline) as client:
        assert _settings(client) == _as_duckdb_says(
            memory_limit=DUCKDB_VIEWS_MEMORY_LIMIT, threads=DUCKDB_VIEWS_THREADS
        )


def test_the_views_keep_the_memory_settings_the_user_chose(duckdb_file, tmp_path, monkeypatch):
    from pipelines.reporting.views import _duckdb_views_settings

    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", '{"memory_limit": "1GB"}')
    pipeline = make_pipeline(destination="duckdb", pipelines_dir=str(tmp_path / "p"))
    with pipeline.sql_client() as client:
        chosen = _settings(client)
        with _duckdb_views_settings(client, "duckdb") as applied:
            assert applied == {}
            assert _settings(client) == chosen


def _settings(client: Any) -> tuple[Any, ...]:
    return tuple(client.execute_sql("select current_setting('memory_limit'), current_setting('threads')")[0])


def test_memory_a_step_freed_goes_back_to_the_system_between_steps():
    """glibc keeps freed pages below a block still in use: a run's RSS kept what earlier steps had
    freed (bench/README.md, "Findings: memory"). `give_back_memory` returns them."""
    from pipelines.ops.runner import _malloc_trim, give_back_memory

    if _malloc_trim() is None:
        pytest.skip("not glibc")
    blocks = [bytearray(64 * 1024) for _ in range(1024)]  # 64 MB below glibc's mmap threshold
    kept = blocks[-1]
    del blocks
    before = _rss_mb()
    give_back_memory()
    assert before - _rss_mb() > 32, "the freed 64 MB should mostly leave the process"
    assert len(kept) == 64 * 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_memory_big_buffers_freed_leave_the_process_without_a_trim():
    """glibc raised its mmap threshold to the size of each big block freed, after which big buffers
    came from the heap between small blocks still in use and stayed in the process once freed (the
    run's RSS grew slice by slice). With the threshold fixed they are mappings, returned when freed."""
    from pipelines.ops.runner import fix_mmap_threshold

    if not fix_mmap_threshold():
        pytest.skip("not glibc")
    big = bytearray(16 * 2**20)
    del big  # would raise a moving threshold to 16 MB
    buffers = [bytearray(2**20) for _ in range(128)]
    before = _rss_mb()
    del buffers[::2]  # every other one: the freed ones lie between buffers still in use
    assert before - _rss_mb() > 32, "the freed 64 MB of buffers should mostly leave the process"
    assert len(buffers) == 64
