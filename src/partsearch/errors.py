"""Errors a user can cause. The CLI prints their message (one line that names the file, field
or value and the fix) and exits with status 2, instead of a traceback."""


class UserError(Exception):
    """Base class for every error caused by input a user gave (files, arguments, configs)."""


class DataError(UserError):
    """A dataset file, record, image or split is missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint or run directory is missing, corrupt or from another configuration."""


class SearchIndexError(UserError):
    """A search index is missing, corrupt or was built with another model."""


class StorageError(UserError):
    """The disk refused a write (full, read-only, no permission). What was being written is
    removed; what was there before stays as it was."""
