"""MemoryStorage's runnable queue: ids handed to waiting takers in order, none lost to a cancel."""

from __future__ import annotations

import asyncio

from avtomatika.storage.memory_runnable import RunnableQueue


async def test_ids_queued_before_a_take_come_out_in_order() -> None:
    queue = RunnableQueue()
    for job_id in ("a", "b", "c"):
        queue.put(job_id)
    assert [await queue.take(1.0) for _ in range(3)] == ["a", "b", "c"]


async def test_the_taker_waiting_longest_gets_the_next_id() -> None:
    queue = RunnableQueue()
    first = asyncio.ensure_future(queue.take(60.0))
    second = asyncio.ensure_future(queue.take(60.0))
    await asyncio.sleep(0)
    queue.put("a")
    queue.put("b")
    assert (await first, await second) == ("a", "b")


async def test_a_take_with_nothing_queued_answers_none_once_its_time_is_up() -> None:
    queue = RunnableQueue()
    assert await queue.take(0.01) is None
    queue.put("a")
    assert await queue.take(0.01) == "a"


async def test_takers_with_different_timeouts_each_answer_none_and_the_others_keep_waiting() -> None:
    queue = RunnableQueue()
    patient = asyncio.ensure_future(queue.take(60.0))
    await asyncio.sleep(0)
    assert await queue.take(0.01) is None  # the earlier deadline, though it came second
    assert not patient.done()
    queue.put("a")
    assert await patient == "a"


async def _two_takers(queue: RunnableQueue) -> tuple[asyncio.Future[str | None], asyncio.Future[str | None]]:
    """Two takers waiting on ``queue``, the first one first."""
    first = asyncio.ensure_future(queue.take(60.0))
    second = asyncio.ensure_future(queue.take(60.0))
    await asyncio.sleep(0)
    return first, second


async def test_a_cancelled_taker_is_passed_over() -> None:
    queue = RunnableQueue()
    gone, waiting = await _two_takers(queue)
    gone.cancel()
    await asyncio.sleep(0)
    queue.put("a")
    assert await waiting == "a"


async def test_a_taker_woken_then_cancelled_before_it_ran_wakes_the_next_one() -> None:
    queue = RunnableQueue()
    woken, waiting = await _two_takers(queue)
    queue.put("a")  # wakes the first taker...
    woken.cancel()  # ...cancelled before it ran
    assert list(queue) == ["a"]  # queued until taken
    assert await waiting == "a"
    assert (await asyncio.gather(woken, return_exceptions=True))[0].__class__ is asyncio.CancelledError


async def test_an_id_taken_by_a_new_take_before_the_woken_taker_ran_leaves_that_one_waiting() -> None:
    queue = RunnableQueue()
    woken = asyncio.ensure_future(queue.take(60.0))
    await asyncio.sleep(0)
    queue.put("a")
    assert await queue.take(1.0) == "a"  # no wait: it was queued
    await asyncio.sleep(0)
    assert not woken.done()  # it waits again
    queue.put("b")
    assert await woken == "b"


def test_a_queue_used_by_a_new_loop_still_times_its_takers_out() -> None:
    queue = RunnableQueue()

    async def wait_briefly() -> None:
        taker = asyncio.ensure_future(queue.take(0.05))  # arms the timer in this loop, which then ends
        await asyncio.sleep(0)
        taker.cancel()

    asyncio.run(wait_briefly())
    assert asyncio.run(queue.take(0.1)) is None  # a later deadline than the dead loop's timer
