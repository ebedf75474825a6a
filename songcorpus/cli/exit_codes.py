"""How a command's error reaches the user, written once for every command: one line on stderr and an exit code.

Exit 2 is the command's fault (a bad flag, config key, input location or model, or an error the command declares as
its input's); exit 3 (``JOB_FAULT_EXIT``) is the job's fault (a :class:`JobFault`, or a full, read-only or failing
disk met outside a job), with the traceback too under ``--verbose``; anything else is a bug and propagates as
Python's own traceback (exit 1). Reads and writes nothing but stderr.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from songcorpus.schemas.config_base import ConfigError
from songcorpus.schemas.failures import JOB_FAULT_EXIT, JobFault, SourceError, describe

COMMAND_FAULT_EXIT = 2  # JOB_FAULT_EXIT (3) is the job's fault; 1 is Python's own crash

Handler = Callable[[argparse.Namespace], int]
# A command's own input errors, imported only when an error reaches the top: their modules may import torch
InputErrors = Callable[[], tuple[type[Exception], ...]]


def command_faults() -> tuple[type[Exception], ...]:
    """A bad command line, config, input location or model: the message says what to fix, no traceback. The store
    and model errors are imported only here: their packages import numpy, which ``songcorpus --help`` need not wait
    for."""
    from songcorpus.io.storage import StorageError
    from songcorpus.transforms.models.registry import ModelError

    return ConfigError, FileNotFoundError, SourceError, ModelError, StorageError


def no_input_errors() -> tuple[type[Exception], ...]:
    """For a command whose errors are all the shared ones above."""
    return ()


def declared(input_errors: InputErrors) -> tuple[type[Exception], ...]:
    """The command's input errors; none when their modules cannot be imported (then none of them was raised)."""
    try:
        return input_errors()
    except ImportError:
        return ()


def one_line(exc: Exception) -> str:
    """The error's own message. An error raised in a PyTorch DataLoader worker comes back as the same class with the
    worker's whole traceback as its message ("Caught DataError in DataLoader worker process 0. Original Traceback
    ..."); the user gets the original message and which worker, not the traceback."""
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    if text.startswith(f"Caught {type(exc).__name__} ") and "Original Traceback" in text and marker in text:
        where = text.split("\n", 1)[0].removeprefix(f"Caught {type(exc).__name__} ").rstrip(".")
        return f"{text.rsplit(marker, 1)[1].strip()} ({where})"
    return text


def exit_code(exc: Exception, input_errors: InputErrors, verbose: bool) -> int | None:
    """Print ``exc`` as one line (and its traceback under ``verbose`` for a job fault) and return the exit code;
    ``None`` for an error that is a bug, left to propagate."""
    if isinstance(exc, command_faults()) or isinstance(exc, declared(input_errors)):
        print(f"songcorpus: {one_line(exc)}", file=sys.stderr)
        return COMMAND_FAULT_EXIT
    if isinstance(exc, JobFault):  # the machine or our code, not the input: one message, nothing published
        if verbose:
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        print(f"songcorpus: {exc}", file=sys.stderr)
        return JOB_FAULT_EXIT
    if isinstance(exc, OSError) and exc.errno is not None:  # a full, read-only or failing disk met outside a job
        if verbose:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"songcorpus: {describe(exc)}", file=sys.stderr)
        return JOB_FAULT_EXIT
    return None


def run_command(handler: Handler, args: argparse.Namespace, input_errors: InputErrors = no_input_errors) -> int:
    """Run one command's handler; its exit code, or the one its error maps to."""
    try:
        return handler(args)
    except Exception as exc:  # top level: one clear line, not a traceback wall
        code = exit_code(exc, input_errors, args.verbose)
        if code is None:
            raise
        return code
