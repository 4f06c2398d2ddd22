"""Parallel fan-out: fetch several pages at once with asyncio.gather, then combine them."""

import asyncio

from wfl import Step, WorkflowManager

workflow = WorkflowManager(max_parallelism=4)


async def fetch_page(page: int) -> dict[str, int]:
    await asyncio.sleep(0.05)  # stands in for a network call
    return {"page": page, "items": page * 10}


def combine(pages: list[dict[str, int]]) -> int:
    return sum(p["items"] for p in pages)


@workflow.define(returns=int)
async def fanout(step: Step, pages: int = 8) -> int:
    results = await asyncio.gather(
        *(step.run_action(fetch_page, {"page": i}, name=f"fetch_page[{i}]") for i in range(pages))
    )
    return await step.run_query(combine, {"pages": list(results)})
