"""One submission's grading session, from the grader's side: start sandboxed workers, follow
their messages under a fixed budget, and turn every event into an outcome per check.

The grader must stay in control whatever the worker does, so:

* the whole session has one wall-clock budget, fixed when it starts; no message extends it.
  Inside it, each phase has its own limit: starting the worker (trusted: importing torch),
  running the notebook's definitions, and each check;
* the worker must send exactly the expected messages, in order (``imported``, ``ready``, then
  ``start`` and ``answer`` or ``raised`` for each check in the job, then ``done``), each
  following the schema in :mod:`lesson_lib.course.protocol`. Anything else costs the check in
  progress (or, before the checks, every check) with the reason, and a new worker goes on;
* what the worker writes is read as it comes, with a limit per line and per stream, so a flood
  of output costs time from the budget, not the grader's memory;
* a worker that dies or runs over loses only the check it was running; a new one, in a new
  sandbox, runs the rest. Each check's answer is handed to ``judge`` as soon as it arrives.
"""

import json
import os
import secrets
import select
import shutil
import signal
import tempfile
import time

from lesson_lib.course import protocol, sandbox

STARTUP_SECONDS = 60        # to start a worker and import torch (trusted code)
MIN_SETUP_SECONDS = 30      # at least this long to run the notebook's imports and definitions
MAX_STREAM = 128 << 20      # bytes of messages one worker may send
STDERR_TAIL = 2000          # bytes of the worker's stderr kept, for the reason of a crash


class GraderError(Exception):
    """The grader itself could not run (not the submission's fault): exit code 1."""


class _Violation(Exception):
    """The worker broke the protocol; the message says how."""


def default_budget(n_checks, timeout):
    """The session's wall-clock budget: two worker starts, the definitions, every check."""
    return 2 * STARTUP_SECONDS + max(timeout, MIN_SETUP_SECONDS) + n_checks * timeout


class Session:
    """Run ``items`` (``{"name", "case", "seed"}`` per check) for one submission, whose kept
    ``cells`` and ``constants`` come from :func:`lesson_lib.course.notebook.read_definitions`.

    ``judge(name, value, seconds)`` turns an answer into a result row and ``lost(name,
    status, reason, seconds=0, kind=None, traceback="")`` makes the row of a check that gave
    no answer; :meth:`run` returns ``(rows by name, notes)``.
    """

    def __init__(self, items, cells, lesson, settings, judge, lost, constants=()):
        self.items, self.cells, self.lesson, self.settings = items, cells, lesson, settings
        self.constants = list(constants)
        self.judge, self.lost = judge, lost
        self.rows, self.notes = {}, []
        self.deadline = time.monotonic() + settings["budget"]

    def pending(self):
        return [item for item in self.items if item["name"] not in self.rows]

    def run(self):
        strays = sandbox.Strays()      # processes a worker leaves behind become ours, and are ended
        number = 0
        while self.pending():
            number += 1
            if time.monotonic() >= self.deadline:
                for item in self.pending():
                    self.rows[item["name"]] = self.lost(
                        item["name"], "timeout", f"the submission used its whole time budget of "
                        f"{self.settings['budget']:g}s")
                break
            self._one_worker(number, strays)
        return self.rows, self.notes

    def _write_job(self, folder, pending):
        s = self.settings
        job = {"lesson": self.lesson, "cells": self.cells, "constants": self.constants, "checks": pending,
               "memory_mb": s["memory_mb"], "file_mb": s["file_mb"], "processes": s["processes"],
               "cpu_seconds": int(s["budget"]) + 10}
        path = os.path.join(folder, "job.json")
        with open(path, "x", encoding="utf-8") as f:
            json.dump(job, f)
        os.chmod(path, 0o400)
        return path

    def _one_worker(self, number, strays):
        """One worker in two new private folders (mkdtemp: unguessable names, mode 0700): one
        holds its job file, the other is its working folder. Nothing the worker did to an
        earlier folder (deleted, replaced, planted) can reach these."""
        pending = self.pending()
        job_folder = tempfile.mkdtemp(prefix=f"lesson_lib_grader_job{number}_")
        workdir = tempfile.mkdtemp(prefix=f"lesson_lib_grader_cwd{number}_")
        proc, token = None, secrets.token_hex(8)
        try:
            job_path = self._write_job(job_folder, pending)
            proc = sandbox.start(job_path, workdir, self.settings["bwrap"], token, self.lesson)
            _Follower(self, proc, [item["name"] for item in pending]).follow()
        finally:
            if proc is not None:
                sandbox.kill(proc, token)
                for stream in (proc.stdout, proc.stderr):
                    stream.close()
            strays.end()
            for folder in (job_folder, workdir):
                shutil.rmtree(folder, ignore_errors=True)


class _Follower:
    """Reads one worker's messages and applies them to the session."""

    def __init__(self, session, proc, names):
        self.session, self.proc, self.names = session, proc, names
        self.s = session.settings
        self.phase, self.current, self.index = "start", None, 0
        self.phase_deadline = time.monotonic() + STARTUP_SECONDS
        self.partial, self.partial_size, self.received, self.stderr_tail = [], 0, 0, b""
        self.streams = [proc.stdout, proc.stderr]

    def _enter(self, phase, limit):
        self.phase, self.phase_deadline = phase, time.monotonic() + limit

    def follow(self):
        try:
            while True:
                now = time.monotonic()
                left = min(self.phase_deadline, self.session.deadline) - now
                if left <= 0:
                    return self._timed_out()
                ready, _, _ = select.select(self.streams, [], [], min(left, 0.25))
                if not ready and self.proc.poll() is not None:
                    ready, _, _ = select.select(self.streams, [], [], 0)
                    if not ready:
                        return self._exited()
                for stream in ready:
                    chunk = os.read(stream.fileno(), 1 << 16)
                    if stream is self.proc.stderr:
                        self.stderr_tail = (self.stderr_tail + chunk)[-STDERR_TAIL:]
                        if not chunk:
                            self.streams.remove(stream)
                        continue
                    if not chunk:
                        return self._exited()
                    if self._feed(chunk):
                        return
        except _Violation as error:
            self._lose_current("crashed", f"the worker sent a malformed message: {error}")

    def _feed(self, chunk):
        """Take in bytes from the channel; True once the worker said it is done."""
        self.received += len(chunk)
        if self.received > MAX_STREAM:
            raise _Violation(f"more than {MAX_STREAM >> 20} MB of messages")
        self.partial.append(chunk)  # joined only once a line is complete: no quadratic copying
        self.partial_size += len(chunk)
        if b"\n" not in chunk:
            if self.partial_size > protocol.MAX_LINE:
                raise _Violation("a message is too long")
            return False
        *lines, rest = b"".join(self.partial).split(b"\n")
        self.partial, self.partial_size = [rest], len(rest)
        for line in lines:
            try:
                event = protocol.parse_event(line)
            except protocol.ProtocolError as error:
                raise _Violation(str(error)) from None
            if self._apply(event):
                return True
        return False

    def _expect(self, condition, what):
        if not condition:
            raise _Violation(f"{what} (while {self._doing()})")

    def _doing(self):
        return {"start": "starting", "setup": "running the definitions"}.get(
            self.phase, f"running {self.current}" if self.current else "between checks")

    def _apply(self, event):
        kind, timeout = event["event"], self.s["timeout"]
        if kind == "imported":
            self._expect(self.phase == "start", "an unexpected 'imported'")
            self._enter("setup", max(timeout, MIN_SETUP_SECONDS))
        elif kind == "ready":
            self._expect(self.phase == "setup", "an unexpected 'ready'")
            self.session.notes = list(event["notes"])
            self._enter("between", timeout)
        elif kind == "start":
            expected = self.names[self.index] if self.index < len(self.names) else None
            self._expect(self.phase == "between" and event["check"] == expected,
                         f"a 'start' for {protocol.printable(event['check'], 60)!r}, expected {expected!r}")
            self.current = expected
            self._enter("check", timeout)
        elif kind in ("answer", "raised"):
            self._expect(self.phase == "check" and event["check"] == self.current,
                         f"an unexpected {kind!r}")
            seconds = min(event["seconds"], timeout)
            if kind == "answer":
                try:
                    value = protocol.decode_value(event["value"])
                except (protocol.ProtocolError, RecursionError, MemoryError) as error:
                    raise _Violation(f"the answer: {error}") from None
                row = self.session.judge(self.current, value, seconds)
            else:
                status = "not implemented" if event["kind"] == "not implemented" else event["kind"]
                row = self.session.lost(self.current, status, event["reason"], seconds=seconds,
                                        traceback=event["traceback"])
            self.session.rows[self.current] = row
            self.index, self.current = self.index + 1, None
            self._enter("between", timeout)
        elif kind == "done":
            self._expect(self.phase == "between" and self.index == len(self.names), "an early 'done'")
            return True
        return False

    def _lose_current(self, status, reason):
        """The worker failed: the check it was running (before the checks: every check) is lost."""
        if self.phase == "start":
            raise GraderError(f"the grading worker could not start: {reason}; if it ran out of memory, "
                              f"raise --memory-mb")
        victims = self.names[self.index:] if self.phase == "setup" else \
            [self.current or (self.names[self.index] if self.index < len(self.names) else None)]
        for name in victims:
            if name is not None and name not in self.session.rows:
                self.session.rows[name] = self.session.lost(
                    name, status, reason, seconds=self.s["timeout"] if status == "timeout" else 0.0)

    def _timed_out(self):
        if time.monotonic() >= self.session.deadline:
            for name in self.names[self.index:]:
                self.session.rows.setdefault(name, self.session.lost(
                    name, "timeout", f"the submission used its whole time budget of "
                                     f"{self.s['budget']:g}s"))
            return
        if self.phase == "start":
            self._lose_current("crashed", f"it did not start within {STARTUP_SECONDS} s")
        elif self.phase == "setup":
            limit = max(self.s["timeout"], MIN_SETUP_SECONDS)
            self._lose_current("timeout", f"timed out after {limit:g}s while running the notebook's "
                                          f"imports and definitions")
        else:
            self._lose_current("timeout", f"timed out after {self.s['timeout']:g}s")

    def _exited(self):
        try:
            code = self.proc.wait(timeout=5)
        except Exception:
            code = None
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            why = {"SIGKILL": " (out of memory?)", "SIGSEGV": " (a crash)", "SIGXCPU": " (CPU time limit)"}
            text = f"the grading process was killed by {name}{why.get(name, '')}"
        else:
            text = f"the grading process exited with code {code} (os._exit, or a crash)"
        tail = self.stderr_tail.decode("utf-8", "replace").strip().splitlines()
        if tail:
            text += f"; its last output: {protocol.printable(tail[-1][-150:])!r}"
        self._lose_current("crashed", text)
