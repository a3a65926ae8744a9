"""SIGTERM in an async Ray actor: finish a coroutine first, then exit as Ray would.

A Ray worker process installs its own SIGTERM handler (`Worker.main_loop` in
`ray._private.worker`): it raises `SystemExit` in the main thread, and the core worker
then waits only for the Ray calls running at that moment, disconnects from its raylet
(which restarts an actor with restarts left, while the old process is still tearing
down) and stops the actor's event loop. Work an actor runs in background tasks, outside
any Ray call (a shard's handlers), is cut short; `__ray_shutdown__` comes after the
event loop stopped and the successor was started, too late to finish it.

Python lets only the main thread install a signal handler, and an async actor's code
runs in its event loop's thread, never in the main one. So Ray's handler stays, and the
function it calls to exit (`raise_sys_exit_with_custom_error_message`, looked up among
the handler's globals when it runs) is wrapped: the first SIGTERM starts `before_exit`
on the actor's event loop instead of exiting; once that is through, the process sends
itself SIGTERM again, and Ray's handler exits as it always did (a system exit: an actor
with restarts left is restarted). A process whose handler is not Ray's known one keeps
Ray's behaviour, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

__all__ = ["RAY_EXIT", "ExitAfter", "Stage"]

log = logging.getLogger("ghbot.runtime")

#: The function Ray's SIGTERM handler calls to exit the worker process.
RAY_EXIT = "raise_sys_exit_with_custom_error_message"


class Stage(StrEnum):
    """Where an `ExitAfter` is: the first SIGTERM starts stopping; once done, one exits."""

    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"


class ExitAfter:
    """On SIGTERM, run `before_exit()` on `loop`, then let Ray's handler exit the process.

    `install` puts it in place; it tells whether it could. A SIGTERM that comes while
    `before_exit` runs is ignored (logged): the exit is on its way.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, before_exit: Callable[[], Awaitable[Any]]):
        self.loop = loop
        self.before_exit = before_exit
        #: Stopping from the first SIGTERM, done once `before_exit` returned (or raised).
        self.state = Stage.RUNNING
        self._stopping: asyncio.Task[None] | None = None

    def install(self) -> bool:
        """Wrap the exit of the SIGTERM handler Ray installed; False if it is not Ray's."""
        handler = signal.getsignal(signal.SIGTERM)
        code = getattr(handler, "__code__", None)
        scope: dict[str, Any] | None = getattr(handler, "__globals__", None)
        if code is None or scope is None or RAY_EXIT not in code.co_names or RAY_EXIT not in scope:
            log.warning(
                "SIGTERM will stop this process at once: its handler (%r) is not Ray's", handler
            )
            return False
        ray_exit = scope[RAY_EXIT]

        def exit_when_done(*args: Any, **kwargs: Any) -> Any:
            # In the main thread, from Ray's handler: exit only once `before_exit` is done.
            if self.state == Stage.DONE:
                return ray_exit(*args, **kwargs)
            if self.state == Stage.RUNNING:
                self.state = Stage.STOPPING
                try:
                    self.loop.call_soon_threadsafe(self._start)
                except RuntimeError:  # the loop is closed: nothing left to wait for
                    self.state = Stage.DONE
                    return ray_exit(*args, **kwargs)
            else:
                log.warning("SIGTERM again while stopping: the process exits once stopped")
            return None

        scope[RAY_EXIT] = exit_when_done
        return True

    def _start(self) -> None:
        self._stopping = self.loop.create_task(self._stop())

    async def _stop(self) -> None:
        try:
            await self.before_exit()
        except Exception as exc:
            log.error("stopping failed (%r); exiting all the same", exc)
        finally:
            self.state = Stage.DONE
            os.kill(os.getpid(), signal.SIGTERM)
