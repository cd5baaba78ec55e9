"""The errors a user can cause (bad file, bad config, empty input, a stage run out of order or twice at once).

The CLI prints any of these as one line that names the file or key and the reason, and exits with code 2;
anything else is a bug, printed as a one-line summary with the path of a log holding the traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; the message names the file or key and says why."""


class StageBusy(UserError):
    """Another process is writing the same stage's outputs."""


class WorkerLost(UserError, RuntimeError):
    """A Ray worker died mid-stage; nothing was written, and a rerun starts afresh."""
