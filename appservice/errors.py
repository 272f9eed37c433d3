"""Errors of the Matrix transport. Callers in bot/ decide what a room is told."""

from __future__ import annotations


class MatrixError(Exception):
    """A call to the homeserver failed."""


class HomeserverUnavailable(MatrixError):
    """The homeserver could not be reached, timed out or answered 5xx: retrying may succeed."""


class MatrixRequestError(MatrixError):
    """The homeserver refused the request."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        self.status = status
        self.errcode = errcode
        self.message = message
        super().__init__(f"{status} {errcode}: {message}")


class EncryptionUnavailable(HomeserverUnavailable):
    """An encrypted room's message cannot be sent or read yet (the bot's keys are still
    loading, or the room's members could not be read): retrying may succeed. Never a reason to
    send in the clear."""


class MediaTooLarge(MatrixError):
    """A file of the media repository is larger than the caller takes."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"the file is {size} bytes or more, over the limit of {limit}")
