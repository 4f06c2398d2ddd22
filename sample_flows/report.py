"""A nightly report: a schedule starts it, progress shows how far it got, a deadline bounds it.

wfl schedule add nightly sample_flows/report.py --cron "0 2 * * *" --tz Europe/Berlin
wfl worker                      # starts one run at 02:00 Berlin time, every night
wfl schedule list               # next fire time, last run and its state
wfl status RUN                  # progress {"done": 3, "total": 4}, schedule nightly (slot ...)
"""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()

SECTIONS = ("signups", "orders", "refunds", "errors")


def count_rows(section: str, day: str) -> int:
    """Stands in for a query against the day's data."""
    return sum(map(ord, section + day)) % 500


def publish(day: str, totals: dict[str, int]) -> str:
    lines = ", ".join(f"{k} {v}" for k, v in totals.items())
    return f"report for {day}: {lines}"


# a report still going after an hour is stuck on something: fail it and say so
@workflow.define(returns=str, deadline=3600)
async def nightly_report(step: Step) -> str:
    day = step.now().date().isoformat()  # the slot's day, recorded once
    totals: dict[str, int] = {}
    for section in SECTIONS:
        totals[section] = await step.run_query(count_rows, {"section": section, "day": day})
        await step.set_progress({"done": len(totals), "total": len(SECTIONS)})
    return await step.run_action(publish, {"day": day, "totals": totals})
