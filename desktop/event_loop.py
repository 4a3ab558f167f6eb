"""The asyncio loop that runs on Qt's event loop (qasync), for the worker connection.

The app (``desktop.app``) runs its window inside ``qasync.QEventLoop.run_until_complete``, so the
loop is already running when a :class:`desktop.worker.ProcessWorker` starts. Scripts and tests that
drive Qt themselves (``processEvents``, pytest-qt's waits) get one from :func:`qt_loop` in qasync's
``already_running`` mode: its callbacks are Qt timer and socket-notifier events, so they run whenever
Qt processes events, on the GUI thread. :func:`release` takes such a loop down again.
"""

from __future__ import annotations

import asyncio
import atexit
import time

import qasync
from PySide6.QtWidgets import QApplication


class _AttachedLoop(qasync.QEventLoop):
    """qasync's loop attached to a Qt event loop it did not start (``already_running``)."""

    def stop(self) -> None:
        # qasync's stop() calls QApplication.exit(); with no exec() running, Qt then makes every later
        # QEventLoop.exec() (pytest-qt's waits, modal dialogs) return at once, so no event would be
        # processed again. This loop never started Qt's, so it only marks itself stopped (qasync's
        # private flag: tests/test_worker_process.py connects two windows in a row to guard it).
        self._QEventLoop__is_running = False


_installed: list[_AttachedLoop] = []  # loops qt_loop() attached (not the app's own)
_exit_hooks: list = []


def qt_loop() -> asyncio.AbstractEventLoop:
    """The running asyncio loop of this (GUI) thread; one on Qt's event loop if none runs yet."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    app = QApplication.instance()
    if app is None:
        raise RuntimeError("create the QApplication before connecting to a worker")
    loop = _AttachedLoop(app, already_running=True)
    asyncio.set_event_loop(loop)
    if not _exit_hooks:
        # A script that never calls release(): its executor's QThreads must end before Qt's objects do
        # ("QThread: Destroyed while thread is still running" aborts the process at exit).
        atexit.register(release)
        _exit_hooks.append(release)
    _installed.append(loop)
    return loop


def release() -> None:
    """Cancel the tasks of a loop :func:`qt_loop` started, let them finish, and close it (so that a
    later ``asyncio.run`` on this thread works)."""
    while _installed:
        loop = _installed.pop()
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in tasks:
            t.cancel()
        app = QApplication.instance()
        deadline = time.monotonic() + 5.0
        while app is not None and not all(t.done() for t in tasks) and time.monotonic() < deadline:
            app.processEvents()  # the cancellations (and a connection's close) run as Qt events
            time.sleep(0.005)
        loop.stop()
        asyncio.events._set_running_loop(None)  # what qasync's run_forever does when it ends
        asyncio.set_event_loop(None)
        loop.close()
