"""SPEC §8: continue-as-new, under the fake clock."""

from __future__ import annotations

import itertools
import os
import re
import time

import pattern_flows as pf
import pytest

from wfl import WorkflowFailed
from wfl.testing import WorkflowTestEnv


def chain_of(env: WorkflowTestEnv, first: str) -> list[str]:
    ids = [first]
    while (nxt := env.status(ids[-1]).continued_as) is not None:
        ids.append(nxt)
    return ids


def test_a_month_of_hourly_polling_in_small_journals(wfl_env: WorkflowTestEnv) -> None:
    started = time.perf_counter()
    first = wfl_env.start(pf.poller, {"until": 720}, on_complete=pf.note, context="ctx")
    wfl_env.run_until_idle()
    elapsed = time.perf_counter() - started
    chain = chain_of(wfl_env, first)
    assert len(chain) == 720 // pf.POLLS_PER_RUN + 1  # 30 full days, then the run that ends
    assert pf.calls["poll"] == 720
    assert wfl_env.now() - 1_790_000_000.0 >= 720 * 3600  # a month passed on the fake clock
    final = wfl_env.status(chain[-1])
    assert final.state == "completed"
    assert final.result == {"polls": 720, "seen": sum(c % 3 for c in range(720))}
    # every journal stays small: a day of polls, never the month
    sizes = [os.path.getsize(wfl_env.client.store.journal_path(r)) for r in chain]
    assert max(sizes) < 20_000, sizes
    # each run but the last ended completed, naming the next; links go both ways
    for prev, nxt in itertools.pairwise(chain):
        st = wfl_env.status(prev)
        assert st.state == "completed"
        assert st.result == {"continued_as": nxt}
        assert wfl_env.status(nxt).continued_from == prev
    # on_complete once, at the end of the chain, with the chain's result
    assert pf.completions == [(chain[-1], {"kind": "success", "return_value": final.result},
                               "ctx")]  # fmt: skip
    # client.wait() on the first run follows the chain to its result
    assert wfl_env.client.wait(first, timeout=5) == final.result
    assert elapsed < 30


def test_continue_as_new_with_unserializable_args_fails_the_run_naming_the_type(
    wfl_env: WorkflowTestEnv,
) -> None:
    with pytest.raises(WorkflowFailed, match=r"continue_as_new\(\).*lock"):
        wfl_env.run(pf.bad_continue)
    (only,) = wfl_env.client.list()
    assert only.continued_as is None  # nothing was started


def test_a_child_that_continues_as_new_answers_its_parent_at_the_chains_end(
    wfl_env: WorkflowTestEnv,
) -> None:
    result = wfl_env.run(pf.parent_of_poller)
    assert result == {"polls": 30, "seen": sum(c % 3 for c in range(30))}


def test_replay_after_a_crash_finds_the_run_it_continued_as(wfl_env: WorkflowTestEnv) -> None:
    # the next run is created before this one's end is written: drop that end record (as
    # if the worker died in between) and drive again: no second next run appears
    first = wfl_env.start(pf.poller, {"until": 30})
    wfl_env.run_until_idle()
    chain = chain_of(wfl_env, first)
    assert len(chain) == 2
    path = wfl_env.client.store.journal_path(first)
    from wfl import journal

    records = journal.read(path).records
    assert records[-1]["t"] == "end"
    path.unlink()
    journal.create(path, records[:-1])
    wfl_env.run_until_idle()
    assert chain_of(wfl_env, first) == chain
    assert len(wfl_env.client.list()) == 2


def test_wfl_run_follows_the_chain_and_wfl_status_links_it_both_ways(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    wfl = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"
    poller = Path(__file__).resolve().parent.parent / "sample_flows" / "poller.py"
    d = ["--dir", str(tmp_path)]
    proc = subprocess.run(
        [wfl, "run", str(poller), "--arg", "until=26", "--arg", "every=0.001", *d],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{"cursor": 26, "polls": 26}\n'
    from wfl import Client

    runs = sorted(Client(tmp_path).list(), key=lambda r: r.created_at)
    first, second = runs
    shown = subprocess.run([wfl, "status", first.id, *d], capture_output=True, text=True,
                           timeout=60, check=True).stdout  # fmt: skip
    assert re.search(rf"continued as +{second.id}", shown)
    shown = subprocess.run([wfl, "status", second.id, *d], capture_output=True, text=True,
                           timeout=60, check=True).stdout  # fmt: skip
    assert re.search(rf"continued from +{first.id}", shown)
