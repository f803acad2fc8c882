"""A process-pool map that survives its workers dying, and stops at once on Ctrl-C.

A worker can die without raising anything: a segfault in a native parser, the kernel's
out-of-memory killer, ``os._exit`` in a rule. ``ProcessPoolExecutor`` then fails every pending
call with ``BrokenProcessPool``. :func:`map_resilient` keeps only a few calls in flight, so that
when the pool breaks it knows which items may have killed it; it runs each of those again
alone, in a pool of one, so the item that kills its worker a second time is named and becomes
``on_death(item, reason)``, and everything else goes on in a fresh pool.

Workers ignore SIGINT: on Ctrl-C the parent alone gets ``KeyboardInterrupt``, cancels what is
queued and terminates the workers, so the run stops promptly.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Calls in flight per worker: enough to keep workers busy, few enough to suspect.
IN_FLIGHT_PER_WORKER = 2


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[object, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def _pool(workers: int, initializer: Callable[..., None] | None, initargs: tuple[object, ...]) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("fork") if hasattr(os, "fork") else None,
        initializer=_start_worker,
        initargs=(initializer, initargs),
    )


def _stop(pool: ProcessPoolExecutor) -> list[int | None]:
    """Shut ``pool`` down now; return its workers' exit codes."""
    handles = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in handles:
        if process.exitcode is None:
            process.terminate()
    for process in handles:
        process.join(timeout=5)
    return [process.exitcode for process in handles]


def _exit_code(process, wait: float = 5.0) -> int | None:  # type: ignore[no-untyped-def]
    """The exit code of a worker that died, which the pool's own thread may be reaping too."""
    deadline = time.monotonic() + wait
    while process.exitcode is None and time.monotonic() < deadline:
        process.join(timeout=0.05)  # None while the other thread holds the status: ask again
    return process.exitcode


def _death(codes: Sequence[int | None]) -> str:
    for code in codes:
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = {
                "SIGSEGV": "a crash: a native parser's stack overflowing on very deep nesting?",
                "SIGKILL": "the out-of-memory killer?",
            }.get(name)
            return f"killed by {name}" + (f" ({hint})" if hint else "")
        if code not in (None, 0):
            return f"exited with status {code}"
    return "it stopped unexpectedly"


def map_resilient(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    on_death: Callable[[T, str], R],
    initializer: Callable[..., None] | None = None,
    initargs: tuple[object, ...] = (),
) -> Iterator[R]:
    """``fn`` over ``items`` in ``workers`` processes; results in completion order.

    A worker that dies costs only the item it was running: ``on_death(item, reason)`` takes
    its place in the results. Exceptions ``fn`` raises propagate as with ``Executor.map``.
    """
    pending = list(items)
    pending.reverse()  # pop() from the end keeps the caller's order
    suspects: list[T] = []
    while pending:
        pool = _pool(min(workers, len(pending)), initializer, initargs)
        running: dict[Future[R], T] = {}
        broken = False
        try:
            while pending or running:
                while pending and len(running) < workers * IN_FLIGHT_PER_WORKER:
                    item = pending.pop()
                    try:
                        running[pool.submit(fn, item)] = item
                    except BrokenProcessPool:
                        pending.append(item)
                        broken = True
                        break
                if broken or not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        suspects.append(item)
                        broken = True
                        continue
                    yield result
                if broken:
                    break
        finally:
            _stop(pool)
        if broken:
            suspects.extend(running.values())
            for item in suspects:
                yield _alone(fn, item, on_death, initializer, initargs)
            suspects = []
    for item in suspects:
        yield _alone(fn, item, on_death, initializer, initargs)


def _alone(
    fn: Callable[[T], R],
    item: T,
    on_death: Callable[[T, str], R],
    initializer: Callable[..., None] | None,
    initargs: tuple[object, ...],
) -> R:
    """Run one suspect in a pool of its own: its result, or ``on_death`` if it kills it."""
    pool = _pool(1, initializer, initargs)
    try:
        future = pool.submit(fn, item)
        # Held now: once the pool breaks, it forgets its processes, and their exit codes.
        workers = list((getattr(pool, "_processes", None) or {}).values())
        try:
            return future.result()
        except BrokenProcessPool:
            return on_death(item, _death([_exit_code(process) for process in workers]))
    finally:
        _stop(pool)
