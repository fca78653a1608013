"""Secrets, pseudonymisation and least privilege.

Every faults test already ends with a scan for the canary API key (`_secret_scan`: DEBUG logs, CLI
output, dlt state, traces, load packages) and, on a `target`, the loaded tables. The tests here add
the paths a key is most likely to leak through: a rejected key, failing runs, and a PostgreSQL role
with only the rights it needs; and they check that pseudonymised customer data appears nowhere raw.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipelines.commbox.config import ConfigError
from pipelines.ops.runner import run_pipeline
from tests.fixtures.faults_harness import (
    CANARY_KEY,
    CANARY_PSEUDONYMIZE_KEY,
    SECRETS,
    Cli,
    Warehouse,
    files_containing,
    oracle,
)
from tests.helpers import make_test_pipeline, source_settings

pytestmark = pytest.mark.faults

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def test_the_key_appears_nowhere_even_when_runs_fail(canary_sim, tmp_path, faults_report, request):
    """Scenario 12: a good run, a rejected key, a failing page and a too-long Retry-After, all at
    DEBUG: the canary key is in no output, error, state, trace, package or table."""
    sim = canary_sim()
    sim.clock.advance(600)
    cli = Cli(tmp_path, sim)
    assert cli.run().returncode == 0
    rejected = cli.run(SOURCES__COMMBOX__API_KEY=CANARY_KEY + "-revoked")
    assert rejected.returncode == 1 and "the API key was rejected" in rejected.stderr
    sim.mutate(messages=5)
    sim.clock.advance(600)
    sim.configure(fail_path_regex=r"/transcript", rate_limit_rps=5, retry_after_override=900)
    assert cli.run(SOURCES__COMMBOX__MAX_RETRY_WAIT_SECONDS="1").returncode == 1
    assert [name for name in (tmp_path / "pipelines" / "commbox").glob("trace.pickle")]
    outputs = "".join(cli.transcript)
    assert "DEBUG" in outputs and not any(secret in outputs for secret in SECRETS)
    hits = files_containing(tmp_path, SECRETS) + list(cli.warehouse.text_hits(SECRETS))
    faults_report.secrets(request.node.nodeid, hits)
    assert hits == []


def customer_values(sim: Any) -> dict[str, set[str]]:
    """Raw customer values the warehouse must not hold when pseudonymisation is on."""
    users = sim.truth.users()
    found: dict[str, set[str]] = {"contact": set(), "name": set(), "text": set()}
    for user in users:
        for key in ("email", "phone1", "phone2"):
            if user.get(key):
                found["contact"].add(str(user[key]))
        for identity in user.get("identities", []):
            if not str(identity["provider_id"]).startswith("web-"):
                found["contact"].add(str(identity["provider_id"]))
        if user.get("first_name") and user.get("last_name"):
            found["name"].add(f"{user['first_name']} {user['last_name']}")
    messages = sorted({c["message"] for c in sim.truth.childs() if len(c["message"] or "") > 30})
    found["text"] = set(messages[::10])
    found["text"] |= {t["transcript"][:60] for t in sim.truth.transcripts()[::10] if t["transcript"]}
    return found


PSEUDONYMISED_COLUMNS = {
    "users": ("phone1", "phone2", "email", "first_name", "last_name"),
    "user_identities": ("stream_provider_id", "first_name", "last_name"),
    "objects": ("first_name", "last_name", "message", "user_stream_provider_id"),
    "childs": ("first_name", "last_name", "message", "stream_provider_email"),
    "transcripts": ("transcript",),
}


def test_pseudonymised_customer_data_is_nowhere_raw(canary_sim, target, tmp_path, faults_report, request):
    """Scenario 13: HMAC-SHA256 tokens in every customer column, joins intact, no raw value in the
    warehouse or in any local file (extract files, load packages, state, logs)."""
    sim = canary_sim(conversations=120)
    sim.clock.advance(600)
    pipeline = make_test_pipeline(tmp_path, destination=target.destination())
    settings = source_settings(sim, pseudonymize=True, pseudonymize_key=CANARY_PSEUDONYMIZE_KEY)
    run_pipeline(pipeline, build_views=False, source_overrides=settings)
    warehouse = target.warehouse
    for table, columns in PSEUDONYMISED_COLUMNS.items():
        for column in columns:
            values = [value for value in warehouse.column(table, column) if value is not None]
            assert values and all(HEX64.match(value) for value in values), (table, column, values[:3])
    # Same key, same value: a customer's e-mail token equals their e-mail identity's token.
    joined = warehouse.query(
        "select count(*) from commbox_raw.users u join commbox_raw.user_identities i "
        "on i.stream_provider_id = u.email"
    )[0][0]
    assert joined > 0
    verdict = oracle(warehouse, sim)
    faults_report.verdict(request.node.nodeid, verdict)
    assert not verdict.bad, verdict.bad

    raw = customer_values(sim)
    needles = set().union(*raw.values())
    table_hits = warehouse.text_hits(sorted(raw["contact"] | raw["name"]))
    file_hits = files_containing(tmp_path / "pipelines", needles)
    faults_report.bad_input(
        "PII with pseudonymize on",
        f"{len(needles)} raw values searched, {len(table_hits) + len(file_hits)} found",
        not (table_hits or file_hits),
    )
    assert table_hits == {} and file_hits == []


def test_pseudonymize_without_a_key_fails_before_any_request(canary_sim, tmp_path):
    sim = canary_sim()
    sim.reset_stats()
    with pytest.raises(ConfigError, match="pseudonymize_key"):
        run_pipeline(
            make_test_pipeline(tmp_path),
            build_views=False,
            source_overrides=source_settings(sim, pseudonymize=True),
        )
    assert sim.stats()["total_requests"] == 0


@pytest.mark.postgres
def test_postgres_loader_with_only_connect_and_create(
    canary_sim, postgres_server, tmp_path, faults_report, request
):
    """Scenario 14: a role that is no superuser, owns no database and has CONNECT and CREATE on one
    database (the grants docs/reliability.md gives) loads, re-runs and builds nothing else."""
    admin = postgres_server.admin_connect()
    database = f"commbox_least_{tmp_path.name[-8:].lower().replace('-', '_')}"
    role = postgres_server.loader_role
    try:
        with admin.cursor() as cur:
            cur.execute(f'create database "{database}"')  # owned by the superuser, not the loader
            cur.execute(f'revoke all on database "{database}" from public')
            cur.execute(f'grant connect, create on database "{database}" to "{role}"')
            cur.execute(
                "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = %s", (role,)
            )
            assert cur.fetchone() == (False, False, False)
        sim = canary_sim()
        sim.clock.advance(600)
        cli = Cli(tmp_path, sim, destination="postgres", location=postgres_server.loader_url(database))
        assert cli.run().returncode == 0
        sim.mutate(new=3, messages=4, closures=2)
        sim.clock.advance(600)
        assert cli.run().returncode == 0
        verdict = oracle(cli.warehouse, sim)
        faults_report.verdict(request.node.nodeid, verdict)
        assert not verdict.bad, verdict.bad
        hits = list(Warehouse("postgres", cli.location).text_hits(SECRETS))
        faults_report.secrets(request.node.nodeid + " [tables]", hits)
        assert hits == []
    finally:
        postgres_server.drop_database(database)
        admin.close()


TEXT_ACTIVITY_TYPES = (1, 3, 21)  # Remark, Forward, ConversationSummary


def test_pseudonymised_activities_keep_no_text_or_address(canary_sim, tmp_path, faults_report, request):
    """Remark, Forward and ConversationSummary activities carry agents' notes about the customer and
    addresses: with pseudonymisation on, none of their texts or addresses is loaded raw, while the
    status and assignment changes the SLA views read keep their ids."""
    sim = canary_sim(conversations=120)
    sim.clock.advance(600)
    truth = [a for a in sim.truth.activities() if a["activity_type"] in TEXT_ACTIVITY_TYPES]
    assert {a["activity_type"] for a in truth} == set(TEXT_ACTIVITY_TYPES)
    raw = {str(v) for a in truth for v in a["data"].values() if isinstance(v, str) and len(v) > 3}
    raw |= {v.split("@")[0] for v in raw if "@" in v}  # the address's local part alone, too
    pipeline = make_test_pipeline(tmp_path)
    settings = source_settings(
        sim,
        pseudonymize=True,
        pseudonymize_key=CANARY_PSEUDONYMIZE_KEY,
        activity_types=[*TEXT_ACTIVITY_TYPES, 2, 6],
    )
    run_pipeline(pipeline, build_views=False, source_overrides=settings)
    warehouse = Warehouse("duckdb", str(tmp_path / "warehouse.duckdb"))
    loaded = warehouse.query(
        "select activity_type, text, data, status_to_id, manager_to_id from commbox_raw.activities"
    )
    texts = [row for row in loaded if row[0] in TEXT_ACTIVITY_TYPES]
    assert len(texts) == len(truth)
    assert all(HEX64.match(text) for _, text, *_ in texts), texts[:3]
    assert all(row[3] is not None for row in loaded if row[0] == 2)
    assert any(row[4] is not None for row in loaded if row[0] == 6)
    table_hits = warehouse.text_hits(sorted(raw))
    file_hits = files_containing(tmp_path / "pipelines", raw)
    faults_report.bad_input(
        "activity text with pseudonymize on",
        f"{len(raw)} raw values searched, {len(table_hits) + len(file_hits)} found",
        not (table_hits or file_hits),
    )
    assert table_hits == {} and file_hits == []
