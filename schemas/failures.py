"""Who a failure belongs to: the input, or the machine and the project's own code.

The rule every stage, both engines and the CLI keep:

- **The input's fault** (:class:`InputError` and its subclasses such as ``DecodeError``; a stage's ``Rejection``):
  the file is empty, corrupt, not audio, unreadable for its permissions, its stems do not match... The input gets
  a catalog row with its stage, reason code and reason, and the job goes on.
- **Anything else is a fault of the job** (:class:`StageFault` on a worker, :class:`JobFault` on the driver): an
  exception in the project's code, a full or read-only disk (ENOSPC, EROFS), an I/O error (EIO), a permission
  denied on the output or the cache, a lost object-store connection. The job stops with one message naming what
  failed and what to do, publishes nothing, and keeps its cache, so the same command resumes once it is fixed.
  Marking every song "failed" and publishing an empty corpus with exit status 0 would hide a broken machine or a
  bug behind what looks like bad data.

A :class:`StageFault` crosses process boundaries (Ray actors, Beam workers) as an exception; engines may wrap it
or keep only its text, so :func:`find_stage_fault` looks for it in the exception chain and, failing that, for its
marker in the text.
"""

from __future__ import annotations

import errno
import os
import traceback

STAGE_FAULT_MARKER = "songcorpus stage fault"

# errno values that mean the machine, not the input: a job that meets one stops instead of failing inputs.
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
                  errno.ESTALE, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                  errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EPIPE}


class InputError(Exception):
    """The input itself cannot be used; ``code`` is the funnel's reason code. Becomes a failed row."""

    def __init__(self, message: str, code: str = "undecodable") -> None:
        super().__init__(message)
        self.code = code


class SourceError(ValueError):
    """An input that cannot be read as a source at all (bad manifest, missing path): the command's fault, exit 2."""


class StageFault(RuntimeError):
    """A stage raised something that is not the input's fault (see the module docstring). Its one argument is the
    whole message, so it pickles across engines as it is."""

    @classmethod
    def of(cls, stage: str, source: str, exc: BaseException) -> StageFault:
        return cls(f"{STAGE_FAULT_MARKER}: stage {stage!r} on input {source!r}: {describe(exc)}")

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else STAGE_FAULT_MARKER


class JobFault(RuntimeError):
    """The job stopped for a fault of the machine or the project's code; nothing was published. The CLI prints the
    message as it is and exits with :data:`JOB_FAULT_EXIT`."""


JOB_FAULT_EXIT = 3  # 2 is a bad command line, config or input location; 1 is reserved for Python's own crashes
RESUME_HINT = "nothing was published; the cache is kept, so the same command resumes once this is fixed"


def describe(exc: BaseException) -> str:
    """One line for an exception: an OS error by its errno name and the path it concerns, anything else by its
    type, message and the project-or-library line that raised it."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        what = exc.strerror or os.strerror(exc.errno)
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{what} [{name}]{where}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {text}{at}" if text else f"{type(exc).__name__}{at}"


def is_machine_error(exc: BaseException) -> bool:
    """An OS error that says the machine (disk, memory, network) failed, whatever file it was about."""
    return isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (or while handling), outermost first, each once."""
    chain: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and all(node is not seen for seen in chain):
        chain.append(node)
        node = node.__cause__ or node.__context__
    return chain


def find_stage_fault(exc: BaseException) -> str | None:
    """The message of a :class:`StageFault` an engine raised ``exc`` for: found in the exception chain, else by its
    marker in the text of any exception in the chain (engines that keep only a worker's traceback text)."""
    chain = exception_chain(exc)
    for node in chain:
        if isinstance(node, StageFault):
            return node.message
    for text in (str(node) for node in chain):
        at = text.find(STAGE_FAULT_MARKER)
        if at >= 0:
            line = text[at:].splitlines()[0]
            return line.split(" [while running")[0].rstrip("'\")")  # Beam appends the step it was running
    return None


__all__ = ["InputError", "JOB_FAULT_EXIT", "JobFault", "RESUME_HINT", "STAGE_FAULT_MARKER", "SourceError", "StageFault",
           "describe", "exception_chain", "find_stage_fault", "is_machine_error"]
