"""A month-long reminder: the step is a timer in the journal, not a sleeping process.

wfl start sample_flows/reminder.py --arg days=30 --arg who=Ada
wfl status RUN --why     # "a timer: step 1 (send_reminder) is due at ... (in 30.0d)"
"""

from datetime import timedelta

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def note(who: str) -> str:
    return f"reminder for {who} scheduled"


async def send_reminder(who: str) -> str:
    return f"Hi {who}, this is your reminder!"


@workflow.define(returns=str)
async def reminder(step: Step, who: str = "you", days: float = 30) -> str:
    await step.run_mutation(note, {"who": who})
    return await step.run_action(send_reminder, {"who": who}, run_after=timedelta(days=days))
