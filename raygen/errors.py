"""Errors a user can fix, as opposed to bugs.

Every exception class that describes a bad params file, command-line argument, input file or missing
weight derives from :class:`UserError`. The stage launcher (:func:`raygen.cli.run_stage`) turns one
into a single line, ``raygen <stage>: error: <message>``, and exit status 2 (usage: params and
arguments) or 1 (inputs); anything else is a bug and keeps its traceback. ``--debug`` (or
``RAYGEN_DEBUG=1``) shows the traceback of a user error too.

Standard library only.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what, where, and what to do."""

    exit_status = 1


class UsageError(UserError):
    """A params file or command line the stage cannot run with."""

    exit_status = 2


class MissingFileError(UserError, FileNotFoundError):
    """An input or weight file that is not where it should be; the message says where to get it."""


class MismatchedInputsError(UserError):
    """Two inputs that do not belong together, e.g. a decoder and a VQ-GAN other than the one that made its tokens."""


class ManifestError(UserError, ValueError):
    """A manifest CSV whose columns, values or ids the stage cannot use (duplicates, unknown splits)."""
