"""An hourly poller that runs for ever in small journals: after a day of polls it continues
as a new run (same workflow, fresh journal), carrying only its cursor.

wfl start sample_flows/poller.py --key poller      # one poller, however often this is run
wfl status RUN                   # continued from / continued as: the chain, both ways
wfl run sample_flows/poller.py --arg until=3 --arg every=1   # a short chain, to the end
"""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()

POLLS_PER_RUN = 24  # one day of hourly polls per run: a journal of ~100 records


def fetch_new(cursor: int) -> list[int]:
    """Stands in for an API: the items after `cursor` (one or none per poll)."""
    return [cursor + 1] if cursor % 2 == 0 else []


@workflow.define
async def poller(step: Step, cursor: int = 0, polls: int = 0, until: int = 0,
                 every: float = 3600) -> dict[str, int]:  # fmt: skip
    """Polls every `every` seconds; `until` > 0 stops after that many polls in all."""
    for _ in range(POLLS_PER_RUN):
        if until and polls >= until:
            return {"cursor": cursor, "polls": polls}
        items = await step.run_action(fetch_new, {"cursor": cursor})
        cursor = max([cursor, *items]) if items else cursor + 1
        polls += 1
        await step.set_progress({"cursor": cursor, "polls": polls})
        await step.sleep(every)
    return await step.continue_as_new(
        {"cursor": cursor, "polls": polls, "until": until, "every": every}
    )
