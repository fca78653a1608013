"""Shared fixtures: the simulator on an ephemeral loopback port, a throw-away PostgreSQL server."""

pytest_plugins = ["tests.fixtures.simulator", "tests.fixtures.postgres", "tests.fixtures.faults_report"]
