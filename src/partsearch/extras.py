"""Which optional extra of the package brings a module that is not installed, so a command that
needs it says what to install (`pip install 'partsearch[serve]'`) instead of a traceback."""

from __future__ import annotations

from partsearch.errors import MissingExtraError

# top-level module -> the extra in pyproject.toml that installs it
EXTRA_OF = {
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "cv2": "video",
    "filterpy": "video",
    "scipy": "video",
    "open_clip": "clip",
    "pymilvus": "milvus",
    "milvus_lite": "milvus",
}


def missing_extra(err: ModuleNotFoundError) -> MissingExtraError | None:
    """The one-line error for a module that an extra installs, or None for any other module."""
    top = (err.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return MissingExtraError(f"the Python module {top!r} is not installed; it comes with the {extra!r} extra: "
                             f"pip install 'partsearch[{extra}]'")
