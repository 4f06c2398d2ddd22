"""on_complete that logs each call's idempotency key and attempt, and hangs on its first call
(so a test can SIGKILL the worker inside it)."""

import os
import threading

from wfl import Step, WorkflowManager, current_step

workflow = WorkflowManager()


def echo(text: str) -> str:
    return text


def notify(run_id: str, result: dict, context: dict) -> None:
    ctx = current_step()
    fd = os.open(context["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{ctx.idempotency_key} {ctx.attempt} {result['kind']}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if ctx.attempt == 1:
        threading.Event().wait(120)  # the test kills the worker during this call


@workflow.define
async def quick(step: Step) -> str:
    return await step.run_query(echo, {"text": "hi"})
