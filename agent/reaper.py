"""Reaping the orphans the agent adopts as a child subreaper, without stealing anyone else's child.

The agent is a child subreaper (`PR_SET_CHILD_SUBREAPER`) so that the conmons it starts — which
double-fork — stay its children and can be watched and reaped. The same makes it the parent of every
process orphaned below it: a conmon whose create failed, a `runc init` or a container process whose
runtime or conmon was killed. Nobody waits for those, so without a reaper they stay zombies until the
agent exits.

A blanket `waitpid(-1)` would race with the children someone does wait for: asyncio's child watcher
(one thread per subprocess, blocked in `waitpid(pid)`) and `subprocess.run` in worker threads; a stolen
child's waiter sees ECHILD and reports a made-up exit status. So on each SIGCHLD we reap only zombies
that are (1) not registered with asyncio's child watcher, which `Reaper` replaces by a subclass that
keeps the registered pids, and (2) not in the agent's own session: every process the agent spawns
itself inherits its session unless asyncio started it with `start_new_session` (then it is registered),
while everything adopted comes from below conmon (which calls setsid) or is a container's process (which
runc starts in a session of its own). Both checks run on the event loop thread, where asyncio registers
a child synchronously right after forking it, so no registration can slip between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import warnings
from collections.abc import Callable
from typing import TypeVarTuple, Unpack

import agent.log
from agent.libc import LIBC

_Ts = TypeVarTuple("_Ts")

log = agent.log.get(__name__)

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Make orphaned descendants (double-forked conmons) our children so we can watch and reap them."""
    if LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("subreaper.failed", errno=ctypes.get_errno())


class TrackingChildWatcher(asyncio.ThreadedChildWatcher):
    """asyncio's default child watcher, plus the set of pids it is waiting for."""

    def __init__(self) -> None:
        super().__init__()
        self.pids: set[int] = set()

    def add_child_handler(
        self, pid: int, callback: Callable[[int, int, Unpack[_Ts]], object], *args: *_Ts
    ) -> None:
        self.pids.add(pid)

        def done(pid_: int, returncode: int, *rest: *_Ts) -> None:
            self.pids.discard(pid_)
            callback(pid_, returncode, *rest)

        super().add_child_handler(pid, done, *args)


def zombie_children(parent: int) -> list[tuple[int, int]]:
    """(pid, session id) of each zombie whose parent is `parent`, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 4 and fields[0] == b"Z" and int(fields[1]) == parent:
            found.append((int(name), int(fields[3])))
    return found


class Reaper:
    """Reaps adopted orphans on SIGCHLD (see the module docstring for what it leaves alone)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: TrackingChildWatcher | None = None
        self._pending = False
        self._pid = os.getpid()
        self._session = os.getsid(0)
        self.reaped = 0

    def start(self) -> None:
        """Become a subreaper and reap on SIGCHLD; call from the event loop before spawning children."""
        become_subreaper()
        self._loop = asyncio.get_running_loop()
        self._watcher = TrackingChildWatcher()
        self._watcher.attach_loop(self._loop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the watcher API is 3.12-deprecated
            asyncio.set_child_watcher(self._watcher)
        self._loop.add_signal_handler(signal.SIGCHLD, self._schedule)
        self._schedule()  # orphans adopted before we listened

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def _schedule(self) -> None:
        if not self._pending and self._loop is not None:
            self._pending = True
            self._loop.call_soon(self.reap)

    def reap(self) -> None:
        """Reap every zombie child that nobody else waits for."""
        self._pending = False
        try:
            peek = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if peek is None:
            return  # no child has exited: the common case costs one syscall
        owned = self._watcher.pids if self._watcher is not None else set()
        for pid, session in zombie_children(self._pid):
            if pid in owned or session == self._session:
                continue
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    self.reaped += 1
                    log.debug("reaper.reaped", pid=pid)
