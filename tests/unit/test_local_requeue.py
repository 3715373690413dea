"""The local manager honours a reconcile's ``requeue_after``, as the operator's work queue does.

Without it, anything a reconcile retries on a timer (an MLflow alias move that
failed, a training run waiting on something with no watch event) would wait
for the object's next change in local mode.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from mlops_operator.controllers.reconcile import Result
from mlops_operator.local.manager import LocalManager

MD = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
      "spec": {"model": "iris", "version": "latest", "replicas": 1}}


def test_a_reconcile_asking_to_be_requeued_runs_again_without_a_change(tmp_path: Path) -> None:
    async def run() -> list[float]:
        manager = LocalManager(tmp_path, tick=0.01)
        calls: list[float] = []
        loop = asyncio.get_running_loop()

        async def reconcile(namespace: str, name: str) -> Result:
            calls.append(loop.time())
            return Result(status={}, requeue_after=0.05 if len(calls) < 3 else None)

        manager.reconcilers["ModelDeployment"] = reconcile
        manager.apply([MD])
        deadline = loop.time() + 5
        while len(calls) < 3 and loop.time() < deadline:
            await manager.step()
            await asyncio.sleep(0.01)
        settled = len(calls)
        for _ in range(20):  # 0.2 s more: nothing asks again, nothing changes
            await manager.step()
            await asyncio.sleep(0.01)
        assert len(calls) == settled, "ran again with no change and no requeue"
        await manager.shutdown()
        return calls

    calls = asyncio.run(run())
    assert len(calls) == 3, calls
    assert all(later - earlier >= 0.05 for earlier, later in zip(calls, calls[1:])), calls  # not before it was due
