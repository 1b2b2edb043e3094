"""SIGINT and SIGTERM during training: the first asks the loop to stop at its next log point (it
saves and exits), a second one exits at once."""

from __future__ import annotations

import os
import signal
import threading


class StopSignals:
    """Records the first SIGINT/SIGTERM in `received`; exits the process on the second.

    The second is caught by a thread reading the interpreter's signal wake-up pipe, so it works
    even while the main thread is inside one long kernel call. Use as a context manager, from the
    main thread (only it may install signal handlers)."""

    def __init__(self):
        self.received: int | None = None

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._record) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._write_end, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_end, warn_on_full_buffer=False)
        self._watcher = threading.Thread(target=self._exit_on_second_signal, daemon=True)
        self._watcher.start()
        return self

    def _record(self, signum, _frame) -> None:
        self.received = signum

    def _exit_on_second_signal(self) -> None:
        seen = 0
        while byte := os.read(self._read_end, 1):
            if byte[0] in (signal.SIGINT, signal.SIGTERM):
                seen += 1
            if seen >= 2:
                os.write(2, f"\n{signal.Signals(byte[0]).name} again: stopping now, without saving\n".encode())
                os._exit(128 + byte[0])
        os.close(self._read_end)

    def __exit__(self, *exc) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._write_end)  # the thread reads end-of-file and ends
        # ... and is waited for: a daemon thread still waking while the interpreter shuts down is
        # ended by the runtime mid-call, which can abort the process at exit.
        self._watcher.join(timeout=10)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
