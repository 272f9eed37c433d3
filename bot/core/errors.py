"""Every error Doryo raises on purpose, in one tree.

    DoryoError
     ├── ConfigError          bad configuration; the CLI prints it and exits with code 2
     ├── DatabaseError        the database cannot be reached or used
     │    └── MigrationError    the schema cannot be brought to this version
     ├── EmbeddingError       the embedding model failed (provider down, timed out, bad answer);
     │                          memory falls back to full-text search and embeds later
     ├── EmbeddingModelMismatch  the memory's vectors were made by another embedding model than
     │                          the configured one; `doryo reindex` re-embeds them
     ├── ProviderError        one LLM provider failed one call (retryable or not); the router
     │                          retries, falls back, and only then tells the room (LLMUnavailable)
     ├── UserError            text that is safe to show in a room, as an m.notice
     │    ├── PermissionDenied  the sender may not do this; names who may
     │    ├── LLMUnavailable    every model of the chain failed; says which and why, briefly
     │    ├── UnknownModel      a model reference names no configured provider or alias
     │    ├── RateLimited       an LLM rate limit is reached; says which and when it resets
     │    ├── BudgetExceeded    a monthly LLM budget is spent; says which and when it resets
     │    ├── BlueprintError    a blueprint is invalid or missing; names the field
 │    ├── LettaUnavailable  the Letta server could not be reached or failed; says what to check
 │    └── ExternalToolUnavailable  an external tool service (Composio) failed a call; says
 │                          whether to try again later (an outage) or not (a refusal)

The Matrix transport has its own small tree in appservice.errors (appservice/ never imports bot/):
    MatrixError ── HomeserverUnavailable   not reachable or 5xx: the work is retried, not dropped
               └── MatrixRequestError      the homeserver refused the request (errcode, status)

Anything else that reaches the per-event boundary is a bug: it is logged with its traceback and
the room is told, in general words, that something went wrong.
"""

from __future__ import annotations


class DoryoError(Exception):
    """Base of the errors Doryo raises on purpose."""


class ConfigError(DoryoError):
    """The configuration is invalid. `key` is the dotted path of the offending key, if known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DatabaseError(DoryoError):
    """The database cannot be reached or used."""


class MigrationError(DatabaseError):
    """The database schema cannot be migrated (for example, it is newer than this code)."""


class EmbeddingError(DoryoError):
    """The embedding model could not embed (provider down or refusing, timed out, bad answer).

    `retryable`: worth another try later (timeouts, lost connections, 429, 5xx).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class EmbeddingModelMismatch(DoryoError):
    """The stored vectors were made by another embedding model (or size) than the configured one.

    Vectors of two models must never be compared, so memory refuses vector queries and inserts
    until the operator runs `doryo reindex`, which re-embeds everything with the configured model.
    """

    def __init__(self, *, stored_model: str, stored_dims: int, model: str, dims: int) -> None:
        super().__init__(
            f"the workspace memory was embedded with {stored_model} ({stored_dims} dimensions), "
            f"but embeddings.model is now {model} ({dims} dimensions); run "
            "`doryo reindex -c config.yaml` to re-embed the memory with the new model"
        )
        self.stored_model = stored_model
        self.stored_dims = stored_dims
        self.model = model
        self.dims = dims


class UserError(DoryoError):
    """An error whose message is written for the person who sent the command."""


class PermissionDenied(UserError):
    """The sender is not allowed to do this. The message says who is."""


class ProviderError(DoryoError):
    """One call to one LLM provider failed. Internal: the router retries or falls back.

    `retryable`: worth another try (429, 5xx, timeouts, lost connections); `retry_after`: seconds
    the provider asked to wait, if it said; `kind`: a short reason for the summary shown in a
    room ("timed out after 30 s", "rate limited", "HTTP 500", ...); `timeout`: it took too long.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        kind: str = "error",
        retry_after: float | None = None,
        status: int | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.kind = kind
        self.retry_after = retry_after
        self.status = status
        self.timeout = timeout


class LLMUnavailable(UserError):
    """No model of the chain answered. The message names each and why, briefly.

    `failures` is the list of (model reference, reason) pairs, for callers that present it
    differently (the @ask answer falls back to memories and says no model answered).
    """

    def __init__(self, message: str, failures: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.failures = failures


class UnknownModel(UserError):
    """A model reference names no configured provider or alias."""


class RateLimited(UserError):
    """An LLM rate limit is reached. Nothing was sent to the provider.

    `scope` is agent, workspace or user; `limit` is requests or tokens; `reset_after` is the
    number of seconds until the window resets.
    """

    def __init__(self, message: str, *, scope: str, limit: str, reset_after: float) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit = limit
        self.reset_after = reset_after


class BudgetExceeded(UserError):
    """A monthly LLM budget is spent and the settings say to refuse (not switch models)."""

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


class BlueprintError(UserError):
    """A blueprint is invalid (the message names each bad field) or does not exist.

    `fields` lists the dotted field names at fault, in the order the problems were found.
    """

    def __init__(self, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or []


class LettaUnavailable(UserError):
    """The Letta server did not answer (down, timed out, 5xx) or refused the request.

    `reachable`: whether the server was reached at all (a refusal) or not (down, timed out): only
    an unreachable server makes the built-in agent answer instead (letta.fallback_to_native).
    """

    def __init__(self, message: str, *, reachable: bool = False) -> None:
        super().__init__(message)
        self.reachable = reachable


class ExternalToolUnavailable(UserError):
    """An external tool service (Composio) did not answer, failed, or refused a call.

    `retryable`: the service is down or overloaded (timed out, unreachable, HTTP 5xx or 429):
    the same call may work later; not retryable: it refused this request (a bad key, a bad
    argument). `reached`: False when the request surely never reached the service (nothing can
    have run), True when it did or may have (a timeout).
    """

    def __init__(self, message: str, *, retryable: bool, reached: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reached = reached
