"""A quiet terminal: TensorFlow's C++ log lines kept off the user's screen.

TensorFlow and XLA log through absl from C++, straight to file descriptor 2,
before and regardless of `TF_CPP_MIN_LOG_LEVEL` ("Could not find cuda
drivers", "failed call to cuInit" on every machine without a GPU, "oneDNN
custom operations", absl's "InitializeLog" warning, tf.data's NodeDef
notes). No setting silences all of them, so the commands route descriptor 2
through a pipe whose reader drops lines in absl's format and passes every
other byte on (Python's own messages, warnings, tracebacks). `--verbose`
leaves descriptor 2 alone.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl's prefix: severity letter, MMDD, a time (hh:mm:ss.micros, or 00:00:<epoch seconds> before
# absl is set up), thread id, file:line]; fatal lines (F) are kept
ABSL_LINE = re.compile(rb"^[IWE]\d{4} [\d:.]+\s+\d+ [^\]\s]+:\d+\] ")
NOISE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions:",  # the second line of cpu_feature_guard's note
    b"INFO: Created TensorFlow Lite XNNPACK delegate",  # the TFLite interpreter, at its first call
)

_installed: _Filter | None = None


def is_native_noise(line: bytes) -> bool:
    """True for a C++ log line of TensorFlow/XLA (fatal ones are kept)."""
    return bool(ABSL_LINE.match(line)) or line.startswith(NOISE)


class _Filter:
    """Descriptor 2 -> pipe -> this thread -> the original descriptor 2, minus the noise."""

    def __init__(self) -> None:
        self.original = os.dup(2)
        read_end, write_end = os.pipe()
        sys.stderr.flush()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.read_end = read_end
        self.thread = threading.Thread(target=self._pump, name="native-log-filter", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_native_noise(line))
            # a long partial line that is not a log line is passed on without waiting for its end
            if len(pending) > 120 and not is_native_noise(pending):
                kept, pending = kept + pending, b""
            if kept:
                os.write(self.original, kept)
        if pending and not is_native_noise(pending):
            os.write(self.original, pending)
        os.close(self.read_end)

    def close(self) -> None:
        """Give descriptor 2 back and let the reader drain what is left."""
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.original, 2)  # the pipe's last write end closes: the reader sees its end
        self.thread.join(timeout=5)
        os.close(self.original)


def quiet_native_logs(enabled: bool = True) -> None:
    """Filter TensorFlow's C++ log lines out of descriptor 2 for the rest of
    the process (once; `enabled=False` does nothing)."""
    global _installed
    if not enabled or _installed is not None:
        return
    try:
        _installed = _Filter()
    except OSError:  # no descriptor 2, or no pipes: leave the terminal as it is
        return
    atexit.register(restore_native_logs)


def restore_native_logs() -> None:
    """Stop filtering (at exit, or before handing the terminal to something else)."""
    global _installed
    if _installed is not None:
        _installed.close()
        _installed = None
