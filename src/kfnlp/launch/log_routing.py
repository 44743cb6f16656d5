"""The terminal side of ``kfnlp run --local``: kfp.local's chatty log goes whole to a file,
the terminal gets one line per stage event and kfnlp's own progress lines.

The stages prefix their progress lines with :data:`STAGE_PREFIX` (passed to them as
``$KFNLP_LOG_PREFIX``, which :func:`kfnlp.launch.in_pod.configure_logging` reads), so they
can be picked out of the interleaved task output here.
"""

from __future__ import annotations

import re
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
KFP_TASK_LINE = re.compile(r"(Executing task|Task '.*' finished with status|Pipeline '.*' finished with status)")
STAGE_PREFIX = "kfnlp | "


class LogRouter:
    """A stdout stand-in: everything to the log file, the essentials to the terminal."""

    def __init__(self, log: TextIO, terminal: TextIO, verbose: bool):
        self.log, self.terminal, self.verbose = log, terminal, verbose
        self._pending = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.terminal.write(text)
            return len(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            plain = ANSI.sub("", line).strip()
            if plain.startswith(STAGE_PREFIX):
                self.terminal.write("  " + plain[len(STAGE_PREFIX) :] + "\n")
            elif KFP_TASK_LINE.search(plain):
                self.terminal.write(plain.split(" - ", 2)[-1] + "\n")
        self.terminal.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def isatty(self) -> bool:
        return False
