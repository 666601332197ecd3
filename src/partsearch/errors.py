"""Every partsearch error type, in one module; the modules that raise them import them from here
(so `config.ConfigError`, `hub.WeightsError`, ... still name the same classes). Errors a user can
cause are `UserError`s: the CLI prints their message (one line that names the file, field or value
and the fix) and exits with status 2, instead of a traceback."""


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


class ConfigError(UserError):
    """A configuration value or key a user wrote is wrong; the message says what to write.
    `key` is the dotted key at fault when known, so the message can say where it was written."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class MissingExtraError(UserError):
    """A module of an optional extra (pyproject.toml) is not installed; the message names the extra."""


class WeightsError(UserError):
    """Pretrained weights could not be found; the message says where to get them."""


class ImageRejected(DataError):
    """An image file or upload that cannot be indexed; the message names it and why."""


class ImageTooLarge(ImageRejected):
    """An image over the pixel limit (a decompression bomb, or simply too large)."""


class TrainingError(UserError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step and the last
    good checkpoint."""


class QueryError(UserError):
    """A query or top_k a user gave is not acceptable; the message says what is."""


class UnknownImage(SearchIndexError, KeyError):
    """An image id that the index does not hold (any more). Also a KeyError, for callers that look
    ids up like a mapping; its message is the sentence, not KeyError's quoted repr."""

    def __init__(self, image_id: int, index_dir=None):
        where = f" in index {index_dir}" if index_dir is not None else ""
        super().__init__(f"no image with id {image_id}{where}; it was deleted or never indexed")
        self.image_id = image_id

    def __str__(self) -> str:
        return str(self.args[0])


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


class VideoError(DataError):
    """A video that cannot be decoded (missing, unreadable, not a video, truncated, damaged)."""


class DetectorError(UserError):
    """An unknown person detector name, or weights that cannot be found or loaded."""


class UnsafeFile(UserError):
    """A file a record or an index names that must not be read: outside the allowed roots, not a
    regular file, or not the file that was indexed (size, mtime or hash changed)."""
