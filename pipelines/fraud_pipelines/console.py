"""What a local pipeline run shows while kfp.local runs it.

kfp.local logs through the root logger (swapping its handlers per task) and prints each task's
spec as JSON, its streamed log and its outputs, with ANSI colours: about 700 lines for one run.
`PipelineConsole` sends all of that to a log file without colour codes and shows one console line
per task start and finish, with the task's wall time; on a terminal a training task's line also
shows its epoch progress, rewritten in place.
"""
from __future__ import annotations

import io
import logging
import re
import sys
import time
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START = re.compile(r"Executing task '([^']+)'")
END = re.compile(r"Task '([^']+)' finished with status (\w+)")
SKIPPED = re.compile(r"Skipping (?:conditional )?task (\S+?):? (.*)")
EPOCH = re.compile(r"\b(v\d+) epoch (\d+/\d+)")
#: The last line of a Python traceback: `package.module.SomeError: message`.
#: (`NotDeployed`: the progressive step found no InferenceService.)
ERROR = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*(?:[A-Za-z_]\w*(?:Error|Exception|Refused|Failed|Timeout|Interrupt|Unavailable|NotFound)|NotDeployed)): (.+)$")


class _LogStream(io.TextIOBase):
    """Text written here goes to the log file without colour codes, and each line to `on_line`."""

    def __init__(self, file: TextIO, on_line) -> None:
        self.file, self.on_line, self.pending = file, on_line, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        plain = ANSI.sub("", text)
        self.file.write(plain)
        *lines, self.pending = (self.pending + plain).split("\n")
        for line in lines:
            self.on_line(line)
        return len(text)

    def flush(self) -> None:
        self.file.flush()


class PipelineConsole(logging.Filter):
    """For the length of a `with` block: kfp.local's output into `log_path`, task lines on `console`.

    A filter on the root logger sees kfp.local's records whichever handlers it has installed."""

    def __init__(self, log_path: Path, console: TextIO | None = None) -> None:
        super().__init__()
        self.log_path, self.console = log_path, console or sys.stdout
        self.live = self.console.isatty()
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.task: str | None = None
        self.stack = ExitStack()

    def __enter__(self) -> PipelineConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stream = _LogStream(self.stack.enter_context(open(self.log_path, "w", encoding="utf-8")), self._line)
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        self.stack.callback(self._restore, handlers, level)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        root.addFilter(self)
        self.stack.enter_context(redirect_stdout(stream))
        self.stack.enter_context(redirect_stderr(stream))
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def _restore(self, handlers: list[logging.Handler], level: int) -> None:
        root = logging.getLogger()
        root.removeFilter(self)
        root.handlers[:] = handlers
        root.setLevel(level)

    def filter(self, record: logging.LogRecord) -> bool:
        message = ANSI.sub("", record.getMessage())
        if match := START.search(message):
            self.task = match.group(1)
            self.started[self.task] = record.created
            self._show(f"  {self.task:<16} started", final=not self.live)
        elif match := END.search(message):
            task, status = match.groups()
            self.seconds[task] = round(record.created - self.started.get(task, record.created), 2)
            self.status[task] = status
            self._show(f"  {task:<16} {status.lower():<8} {self.seconds[task]:7.1f} s", final=True)
        elif match := SKIPPED.search(message):
            self._show(f"  {match.group(1):<16} skipped: {match.group(2)}", final=True)
        return True

    def _line(self, line: str) -> None:
        if self.task is None:
            return
        if match := ERROR.match(line):
            self.errors[self.task] = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
        elif self.live and (match := EPOCH.search(line)):
            elapsed = time.time() - self.started[self.task]
            self._show(f"  {self.task:<16} {match.group(1)} epoch {match.group(2)}  {elapsed:5.0f} s", final=False)

    def _show(self, text: str, *, final: bool) -> None:
        if self.live:  # rewrite the task's line in place
            self.console.write(f"\r\x1b[K{text}" + ("\n" if final else ""))
        else:
            self.console.write(text + "\n")
        self.console.flush()

    def failure(self) -> str:
        """The failed task and the error its log ended with."""
        failed = [task for task, status in self.status.items() if status != "SUCCESS"]
        task = failed[-1] if failed else self.task or "?"
        return f"task {task} failed: {self.errors.get(task, 'see the log')}"
