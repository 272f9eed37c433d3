"""The inside of a local embedding worker process (bot.memory.embeddings.LocalEmbedder's lanes).

Outside bot.memory and light on imports: a worker imports this module (and its packages'
__init__) before anything else, and until `start` has run it cannot notice that the bot is gone
(importing bot.memory takes over a second). torch and the model come later, with the first batch.

The model is module state on purpose: this module's globals live in the worker process, one model
per process, and a ProcessPoolExecutor can only hand a worker functions by name, not an object.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_PR_SET_PDEATHSIG = 1

Computed = Literal["float32", "bfloat16"]
"""What a loaded model computes in."""

_package = ""
_model: SentenceTransformer | None = None
_precision: Computed = "float32"

# Texts whose vectors must agree, in bfloat16 and float32, before bfloat16 is used.
PROBES = (
    "Thanks!",  # short texts agree least: fewest tokens averaged
    "When is the launch?",
    "The build of the payments service failed on runner 3 after two retries.",
    "Who owns the follow-up with the design team about the new onboarding flow, and by when?",
    "Deploy blocked: migration 0042 locks the orders table for 40 s in production.",
)
AGREEMENT = 0.9998


def start(bot_pid: int, package: str, nice: int) -> None:
    """The worker's initializer: tie its life to the bot's, set its priority and quiet,
    offline model loading."""
    global _package
    _package = package
    # A bot killed outright (kill -9, out of memory) cannot stop its workers: they would wait
    # for work forever, holding their memory.
    _exit_with(bot_pid)
    # Ctrl-C in a terminal reaches the whole process group: the bot stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    # The files are in the package: nothing may be fetched, and no progress bars on stderr.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # torch's OpenMP threads otherwise spin for a while after each batch, taking the CPU from
    # PostgreSQL and the event loop right when a search follows the embedding.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _exit_with(bot_pid: int) -> None:
    if sys.platform == "linux":
        # The kernel kills the worker when the bot dies, even in the middle of loading torch
        # (a thread of ours could not run then: loading its libraries holds the GIL).
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(
            target=_watch, args=(bot_pid,), name="exit with the bot", daemon=True
        ).start()
    if os.getppid() != bot_pid:
        os._exit(0)  # it died before the line above


def _watch(bot_pid: int) -> None:
    while os.getppid() == bot_pid:
        time.sleep(1)
    os._exit(0)


def load(precision: str = "auto") -> tuple[int, Computed]:
    """Load the model (once); returns the size of its vectors and the precision it computes
    in ("float32" or "bfloat16"; `precision` "auto" chooses, see `_lowered`). ImportError: no
    `embeddings` extra."""
    global _model, _precision
    if _model is None:
        import torch

        # One thread per worker: an OpenMP team of two, on a small machine where Synapse or
        # PostgreSQL holds the other core, waits at every barrier for its descheduled half
        # (in bench/ask.py a question took p50 25 ms with one thread, 34 ms with two).
        torch.set_num_threads(1)
        model = _load_float32()
        if precision == "bfloat16" or (precision == "auto" and _native_bfloat16()):
            lowered = _lowered(model)
            model = lowered if lowered is not None else _load_float32()
            _precision = "bfloat16" if lowered is not None else "float32"
        _model = model
    return int(_model.get_embedding_dimension() or 0), _precision


def _load_float32() -> SentenceTransformer:
    import importlib

    package = importlib.import_module(_package)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model: SentenceTransformer = package.load_model("cpu")
    return model


def _native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16, AMX); elsewhere bfloat16
    is emulated and slower than float32. (torch has no public name for this yet; a torch
    without these answers "no".)"""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, check, lambda: False)()) for check in checks)


def _lowered(model: SentenceTransformer) -> SentenceTransformer | None:
    """The model with its transformer computing in bfloat16, if its vectors still agree with
    float32's (cosine >= AGREEMENT on PROBES); None if not (the model is then spoiled).

    On a CPU with bfloat16 in hardware the transformer reads half the bytes and multiplies
    faster: a short question takes ~11 instead of ~17 ms, a batch of 64 a third of the time.
    Only the transformer is lowered: its token vectors are averaged and normalised in float32
    (pooled in bfloat16 they agree to 0.998 only), so the vectors keep a cosine of at least
    0.9998 to float32's (median 0.99996 over the 346 texts of tests/data/retrieval; one-word
    messages agree least) — the same model's vectors, comparable with those already stored."""
    import torch

    reference = _vectors(model, PROBES)
    try:
        transformer = model[0]
        transformer.auto_model.to(torch.bfloat16)
        transformer.register_forward_hook(_token_embeddings_in_float32)
        agreement = float(np.min(np.sum(_vectors(model, PROBES) * reference, axis=1)))
    except (AttributeError, KeyError, TypeError, RuntimeError):
        return None  # not the layout of a sentence-transformers text model: stay in float32
    return model if agreement >= AGREEMENT else None


def _token_embeddings_in_float32(module: Any, inputs: Any, features: Any) -> Any:
    features["token_embeddings"] = features["token_embeddings"].float()
    return features


def _vectors(
    model: SentenceTransformer, texts: Sequence[str], batch_size: int = 64
) -> NDArray[Any]:
    return np.asarray(
        model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    )


def encode(texts: list[str], batch_size: int, precision: str = "auto") -> NDArray[Any]:
    load(precision)
    assert _model is not None
    return _vectors(_model, texts, batch_size)


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)
