"""orch's exit codes, in one place (CONTRACT.md, "Run outcome exit codes")."""

from __future__ import annotations

from orch.model import RunStatus

__all__ = ["CANCELED", "FAILED", "INTERNAL", "INVALID", "OK", "for_run_status"]

OK = 0
INTERNAL = 1  # a bug in orch: reported with one line (and the traceback with ORCH_DEBUG=1)
INVALID = 2  # invalid plan or arguments, unknown run, unusable run directory
FAILED = 3  # the run ended with a task FAILED or SKIPPED
CANCELED = 4  # orch cancel, Ctrl-C, SIGTERM or SIGHUP

_BY_STATUS = {RunStatus.SUCCESS: OK, RunStatus.FAILED: FAILED, RunStatus.CANCELED: CANCELED}


def for_run_status(status: RunStatus) -> int:
    """The exit code of a run that ended with ``status``."""
    return _BY_STATUS[status]
