"""Where a delivery's run in its host may be stopped, and whether it wrote: `Run`.

A host (`actors.installation.InstallationHost`) makes one `Run` per delivery it runs and
sets it as the GitHub client's `call_watcher` for that run, so the client tells it when
it waits and when it writes. `Stopped` is raised in the run where it may be stopped and
its host stopped: the delivery stays pending in the journal, for the next activation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.installation import InstallationHost

__all__ = ["Run", "Stopped"]


class Stopped(Exception):
    """Raised in a delivery's run when its host stopped: it stays pending (`Run`)."""


class Run:
    """A delivery being run in its mailbox task, and where it may be stopped.

    It may be stopped where running it again from its last journaled step repeats no
    write: between attempts (a rate limit, a retry's backoff), and, in an attempt that
    has sent no write yet, before its first write or while the GitHub client waits for
    its turn (the write lane, a backoff; the client tells through `call_watcher`). Not
    while an outcome is journaled, nor once the handler's own tasks called GitHub in
    the attempt (their calls are not followed; a task that has not called yet is not
    known either). What the installation's client holds that the journal does not (a
    secondary-limit pause, the write lane's next turn, an open breaker) goes to the
    successor in the journal (`InstallationHost.hand_over_client`). A host that stops
    (`InstallationHost.stop`) cancels the runs waiting where they may be stopped; the
    others run on and are stopped at the next such place, or finish.

    It also follows whether GitHub did a write of the attempt's (`repeats`): a rate
    limit or an open breaker met before that costs no attempt; after it, running the
    attempt again repeats the write, so it is an attempt like any that failed.
    """

    __slots__ = ("between", "handlers", "host", "refused", "repeats", "task", "waits", "wrote")

    def __init__(self, host: InstallationHost) -> None:
        self.host = host
        self.task = asyncio.current_task()
        self.between = self.waits = self.wrote = self.refused = False
        #: Whether GitHub did a write of this attempt's (answered it with success; or a
        #: lease's task may have): running the attempt again would repeat it.
        self.repeats = False
        #: The delivery's handlers once its event is decoded (for this sender: the app's
        #: own deliveries reach only `include_own` ones), for a give-up after that.
        self.handlers: Sequence[str] | None = None

    @property
    def cuttable(self) -> bool:
        """Whether `stop` may cancel it now (it is suspended in such a wait)."""
        return self.between or (self.waits and not self.wrote)

    def _stop_here(self) -> bool:
        return self.host.stopping

    def may_cut(self) -> None:
        """Between attempts: raise `Stopped` if the host stopped."""
        if self._stop_here():
            raise Stopped
        self.between = True

    def attempt(self) -> None:
        """An attempt of a handler starts."""
        self.between = self.wrote = self.refused = self.repeats = False

    def journaling(self) -> None:
        """The attempt's outcome is being journaled: not to be cut from here on."""
        self.between = False
        self.wrote = True

    # `CallWatcher`, for the handler's GitHub calls:

    def waiting(self, waiting: bool) -> None:
        if self._from_another_task():
            return
        if waiting and not self.wrote and self._stop_here():
            self._refuse()
        self.waits = waiting

    def calling(self, writes: bool) -> None:
        if self._from_another_task():
            return
        if writes:
            if not self.wrote and self._stop_here():
                self._refuse()
            self.wrote = True

    def written(self) -> None:
        self.repeats = True  # the handler's own tasks' writes too

    def _from_another_task(self) -> bool:
        """Tell whether the client is called from a task the handler started: its calls
        are not followed (any may be a write), so the attempt is not cut from now on."""
        if asyncio.current_task() is self.task:
            return False
        self.wrote = True
        return True

    def _refuse(self) -> None:
        """Stop the attempt before the client waits or writes: cancel it from inside."""
        self.refused = True  # should the handler swallow the cancellation (`InstallationHost._run`)
        raise asyncio.CancelledError
