"""The one exception tree of orch.

Every error a user can cause or meet is an :class:`OrchError`; the CLI prints it
as a single line (``orch: error: …``) and exits with its ``exit_code``. Anything
else escaping the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class OrchError(Exception):
    """Base of every orch error. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class UsageError(OrchError):
    """The command line or a setting is malformed (bad flag value, unknown target)."""

    exit_code = 2


class ProjectError(OrchError):
    """The project folder or its ``.orch/`` state cannot be found or used."""

    exit_code = 2


class NotConfiguredError(UsageError):
    """A target (``colab``, ``ssh:HOST``) was named that this project has not set up."""


class JobNotFoundError(UsageError):
    """A job reference (id, id prefix or name) matches no job, or is ambiguous."""


class IllegalTransitionError(OrchError):
    """A state change that the job state machine forbids, or that lost a race."""


class StoreError(OrchError):
    """The SQLite state is unreadable, from a newer orch, or otherwise unusable."""


class HubError(OrchError):
    """A hub (folder, Drive, SFTP) could not be read or written."""


class HubNotFound(HubError):
    """A key asked of a hub does not exist there."""


class TransientHubError(HubError):
    """A hub call failed in a way worth another try (a dropped upload session)."""


class SignInExpiredError(HubError):
    """Google answered ``invalid_grant``: the saved Drive sign-in expired (an OAuth
    app in Testing status: after 7 days) or was revoked. Not transient: only
    `orch auth` mends it. A HubError, so every path that copes with an unreachable
    hub copes with this one too; a worker keeps its run (or stays idle) and keeps
    trying, in case its credentials are renewed."""


class HubFullError(HubError):
    """The hub's storage is full (Drive's ``storageQuotaExceeded``): retrying does not
    help until space is freed. Its message is one line naming what was not written."""


class ProtocolError(HubError):
    """A hub document (or the hub itself) is of another protocol version, another
    project, or malformed. Its message says which, in one line."""

    exit_code = 2


class SignatureError(ProtocolError):
    """A manifest or assignment is unsigned, mis-signed, or names a blob whose
    content does not match its hash: someone else wrote it."""


class SupersededError(OrchError):
    """A worker's assignment was withdrawn (its lease expired and the job runs as a
    newer attempt): it stops the run and writes nothing more for it."""


class LeaseLapsedError(SupersededError):
    """The hub stayed out of reach for longer than the worker's lease: the daemon has
    re-queued (or will re-queue) the job, so the worker kills its run and writes nothing
    more for it."""


class BundleError(UsageError):
    """A code snapshot or data file could not be taken (missing, unreadable, too big)."""


class PullError(OrchError):
    """A sealed result could not be brought into the project.

    Raised for a checksum mismatch (corrupt or tampered archive), an unsafe archive
    (absolute paths, ``..``, links leaving the tree), or a full disk. Nothing is
    placed in the project when it is raised.
    """


class UnsafeArchiveError(PullError):
    """An archive tried to write outside its destination; it was refused whole."""


class PullLaterError(PullError):
    """A pull that may work later: the hub could not be read (or not yet shows the
    result), or the disk is full. The daemon tries again, backing off."""


class DaemonError(OrchError):
    """The background daemon could not be started, stopped or reached."""


class AuthError(OrchError):
    """Signing in to Drive failed, or the saved credentials are unusable."""


class LaunchError(OrchError):
    """Google's `colab` CLI refused to provision or run a session."""


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or an exhausted quota."""
    import errno

    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        exc = exc.__cause__
    return False
