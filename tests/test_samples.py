"""Every sample flow, driven with wfl.testing (the README's example among them)."""

from __future__ import annotations

from pathlib import Path

from wfl.testing import WorkflowTestEnv

SAMPLES = Path(__file__).resolve().parent.parent / "sample_flows"


def flow(name: str) -> str:
    return str(SAMPLES / name)


def test_reminder() -> None:  # the README's example, verbatim but for the path
    with WorkflowTestEnv() as env:
        result = env.run(flow("reminder.py:reminder"), {"who": "Ada", "days": 30})
        assert result == "Hi Ada, this is your reminder!"


def test_greeting_waits_two_seconds_of_fake_time() -> None:
    with WorkflowTestEnv() as env:
        start = env.now()
        assert env.run(flow("greeting.py"), {"name": "James"}).startswith("The query says")
        assert env.now() - start >= 2.0


def test_approval_completes_on_the_event_and_times_out_without_it() -> None:
    with WorkflowTestEnv() as env:
        run_id = env.start(flow("approval.py"), {"doc": "contract.pdf"})
        env.advance(0)
        env.send_event(run_id, "approved", True)
        assert env.result(run_id) == "contract.pdf published"
        quiet = env.start(flow("approval.py"), {"doc": "memo.txt", "hours": 1})
        env.run_until_idle()
        assert env.result(quiet) == "memo.txt: nobody answered within 1 h"


def test_family_sums_its_children() -> None:
    with WorkflowTestEnv() as env:
        assert env.run(flow("family.py:parent"), {"n": 3}) == 14
        assert sorted(st.workflow for st in env.client.list()) == [
            "child",
            "child",
            "child",
            "parent",
        ]


def test_versioned_payment_takes_the_version_2_path() -> None:
    with WorkflowTestEnv() as env:
        assert env.run(flow("versioned.py"), {"amount": 50_000}) == "refused by the fraud check"
        assert env.run(flow("versioned.py"), {"amount": 5}) == "charged 5"


def test_flaky_succeeds_on_the_third_attempt_and_bogus_fails_at_once() -> None:
    with WorkflowTestEnv() as env:
        assert env.run(flow("flaky.py"), {}) == "order A-42 confirmed on attempt 3"
        bogus = env.start(flow("flaky.py"), {"order": "bogus"})
        env.run_until_idle()
        st = env.status(bogus)
        assert st.state == "failed"
        assert st.steps[0].attempts == 1


def test_fanout_gathers_every_page() -> None:
    with WorkflowTestEnv() as env:
        assert env.run(flow("fanout.py"), {"pages": 8}) == 280


def test_nightly_report_fires_at_two_in_berlin_and_publishes_with_progress() -> None:
    from datetime import UTC, datetime

    start = datetime(2026, 11, 27, 12, tzinfo=UTC).timestamp()
    with WorkflowTestEnv(start=start) as env:
        env.client.add_schedule("nightly", flow("report.py"), cron="0 2 * * *",
                                tz="Europe/Berlin")  # fmt: skip
        env.advance(2 * 86400)
        runs = sorted(env.client.list(), key=lambda r: r.scheduled_at)
        assert [r.scheduled_at for r in runs] == [
            "2026-11-28T01:00:00.000+00:00", "2026-11-29T01:00:00.000+00:00",
        ]  # fmt: skip
        st = env.status(runs[0].id)
        assert st.result.startswith("report for 2026-11-28: signups ")
        assert st.progress == {"done": 4, "total": 4}
        assert st.deadline is not None


def test_poller_chains_runs_and_wait_follows_to_the_end() -> None:
    with WorkflowTestEnv() as env:
        first = env.start(flow("poller.py"), {"until": 60})
        env.run_until_idle()
        assert env.client.wait(first, timeout=5) == {"cursor": 60, "polls": 60}
        chain = [first]
        while (nxt := env.status(chain[-1]).continued_as) is not None:
            chain.append(nxt)
        assert len(chain) == 3  # 24 + 24 + 12 polls
        assert env.status(chain[1]).continued_from == first
