"""Shared fixtures: every test starts with fresh counters in tests/flows.py; `store_spec`
runs a test on both stores (a journal directory and PostgreSQL).

PostgreSQL comes from a throwaway cluster started once per session (tests/pg_cluster.py),
each test on a database of its own. Without the server binaries the PostgreSQL cases skip
with one line, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import flows
import pattern_flows
import pytest
from pg_cluster import Cluster, find_bin

STORES = ["file", "postgresql"]
_db_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _reset_flows() -> Iterator[None]:
    flows.reset()
    pattern_flows.reset()
    yield
    flows.reset()
    pattern_flows.reset()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    bindir = find_bin()
    if bindir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("psycopg is not installed (pip install -e '.[test]')")
        pytest.skip("psycopg is not installed")
    cluster = Cluster(bindir)
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_database(pg_cluster: Cluster) -> str:
    return pg_cluster.create_db("wfl_tests")


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """A store of its own for each test: a fresh schema (creating a database costs ~0.5 s,
    a schema ~1 ms), named by the URL's search_path; what the test leaves is dropped."""
    import psycopg

    schema = f"t{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{pg_database}?options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=STORES)
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store spec for each store: a temp directory, then a fresh PostgreSQL database."""
    if request.param == "file":
        return str(tmp_path / "runs")
    return str(request.getfixturevalue("pg_url"))
