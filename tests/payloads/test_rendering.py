"""The render pool: jobs run in worker processes, fairly between owners (round-robin),
bounded queues (503 ``render_busy`` with ``Retry-After``), domain errors cross the
process boundary, results are cached. Ordering is forced with a gate file, never
with timings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from campaigns.errors import InvalidInput
from campaigns.payloads.rendering import RenderBusy, RenderPool
from tests.fixtures.render_jobs import wait_for_file


def echo(value: str) -> str:
    return value


def fail(code: str) -> None:
    raise InvalidInput("refused in the worker", code=code, members={"x": 1})


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    render_pool = RenderPool(workers=1, queue_per_owner=3, queue_total=5)
    yield render_pool
    await asyncio.to_thread(render_pool.shutdown)


async def _until(condition: object) -> None:
    for _ in range(6000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


async def test_runs_in_another_process(pool: RenderPool) -> None:
    assert await pool.run("a", echo, "hello") == "hello"
    (pid,) = await asyncio.gather(pool.run("a", os.getpid))
    assert pid != os.getpid()


async def test_domain_errors_keep_their_code(pool: RenderPool) -> None:
    with pytest.raises(InvalidInput) as info:
        await pool.run("a", fail, "invalid_logo")
    assert info.value.code == "invalid_logo"
    assert info.value.members == {"x": 1}


async def test_round_robin_and_bounds(pool: RenderPool, tmp_path: Path) -> None:
    gate = str(tmp_path / "open")
    finished: list[str] = []

    async def job(owner: str, name: str) -> None:
        await pool.run(owner, echo, name)
        finished.append(name)

    blocker = asyncio.create_task(pool.run("gate", wait_for_file, gate))
    await _until(lambda: pool.running == 1)
    a_jobs = [asyncio.create_task(job("A", f"A{i}")) for i in range(3)]
    await _until(lambda: pool.waiting("A") == 3)
    # A's queue is full: its next job is refused at once, with Retry-After.
    with pytest.raises(RenderBusy) as info:
        await pool.run("A", echo, "A3")
    assert info.value.status == 503 and info.value.code == "render_busy"
    assert int(info.value.headers["Retry-After"]) >= 1
    b_job = asyncio.create_task(job("B", "B0"))
    await _until(lambda: pool.waiting() == 4)
    c_jobs = [asyncio.create_task(job("C", f"C{i}")) for i in range(1)]
    await _until(lambda: pool.waiting() == 5)
    # The total is full too, even for an owner with nothing waiting.
    with pytest.raises(RenderBusy):
        await pool.run("D", echo, "D0")
    Path(gate).touch()
    await asyncio.gather(blocker, *a_jobs, b_job, *c_jobs)
    # Round-robin: B and C did not wait behind all of A's jobs.
    assert finished == ["A0", "B0", "C0", "A1", "A2"]


async def test_cancelled_waiting_job_is_dropped(pool: RenderPool, tmp_path: Path) -> None:
    gate = str(tmp_path / "open")
    blocker = asyncio.create_task(pool.run("gate", wait_for_file, gate))
    await _until(lambda: pool.running == 1)
    waiting = asyncio.create_task(pool.run("A", echo, "x"))
    await _until(lambda: pool.waiting("A") == 1)
    waiting.cancel()
    await _until(lambda: pool.waiting() == 0)
    Path(gate).touch()
    await blocker
    assert await pool.run("A", echo, "after") == "after"


async def test_results_are_cached_by_key(pool: RenderPool, tmp_path: Path) -> None:
    first = await pool.run_cached("k1", "A", os.urandom, 16)
    assert await pool.run_cached("k1", "A", os.urandom, 16) == first
    assert await pool.run_cached("k2", "A", os.urandom, 16) != first


async def test_shutdown_then_reuse(pool: RenderPool) -> None:
    assert await pool.run("a", echo, "1") == "1"
    await asyncio.to_thread(pool.shutdown)
    assert await pool.run("a", echo, "2") == "2"
