"""Supervised background tasks: a task that dies stops the service with its cause.

Every background task of a worker (the pipeline's dispatcher, the sink's submitter, the
metrics sampler) is started through one :class:`TaskSupervisor`. A task that ends other
than by being cancelled (it raised, or it returned though it should run until stopped) is
a death: the supervisor keeps the first one as a :class:`TaskDied` (the task's error as its
``__cause__``), counts deaths per task name, and calls ``on_death`` at once, on the loop.
The pipeline reports that failure as its own (``Pipeline.failed``), so ``/readyz`` fails
in the same loop turn; the runtime stops, commits nothing more and exits non-zero, and the
process supervisor (or Kubernetes) restarts it from the last commit.

Call contract: used from one event loop; ``spawn`` needs a running loop; ``on_death`` must
not raise (it runs as a task done-callback).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from service.errors import ServiceError

T = TypeVar("T")

__all__ = ["TaskDied", "TaskSupervisor"]


class TaskDied(ServiceError):
    """A supervised background task raised or returned; its error is the ``__cause__``."""

    def __init__(self, message: str, task: str) -> None:
        super().__init__(message)
        self.task = task
        """The task's name."""


class TaskSupervisor:
    """Starts background tasks and turns the first death into a service failure."""

    __slots__ = ("_on_death", "_tasks", "deaths", "failure")

    def __init__(self, on_death: Callable[[TaskDied], None] | None = None) -> None:
        self._on_death = on_death
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failure: TaskDied | None = None
        """The first death, or None while every task lives (or was cancelled)."""
        self.deaths: dict[str, int] = {}
        """Deaths by task name (the ``weir_task_deaths_total`` counter)."""

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start ``coro`` as task ``name`` on the running loop, watched until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        name = task.get_name()
        exc = task.exception()
        if exc is None:
            died = TaskDied(f"background task {name!r} ended while the service runs", name)
        else:
            died = TaskDied(f"background task {name!r} died: {type(exc).__name__}: {exc}", name)
            died.__cause__ = exc
        self.deaths[name] = self.deaths.get(name, 0) + 1
        if self.failure is None:
            self.failure = died
        if self._on_death is not None:
            self._on_death(died)

    @property
    def running(self) -> int:
        """Tasks started and not yet ended."""
        return len(self._tasks)
