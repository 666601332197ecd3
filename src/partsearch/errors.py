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


def user_message(err: UserError) -> str:
    """The one-line message of a user error. An error raised in a DataLoader worker reaches the
    main process re-raised by torch with the worker's traceback prepended ("Caught DataError in
    DataLoader worker process 0. Original Traceback ..."); only its last line, the original
    message, is the user's business."""
    text = str(err)
    if "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last
