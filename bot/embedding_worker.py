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
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_PR_SET_PDEATHSIG = 1

_package = ""
_model: SentenceTransformer | None = None


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


def load() -> int:
    """Load the model (once); returns the size of its vectors. ImportError: no `embeddings`
    extra."""
    global _model
    if _model is None:
        import importlib

        import torch

        # One thread per worker: an OpenMP team of two, on a small machine where Synapse or
        # PostgreSQL holds the other core, waits at every barrier for its descheduled half
        # (in bench/ask.py a question took p50 25 ms with one thread, 34 ms with two).
        torch.set_num_threads(1)
        package = importlib.import_module(_package)
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        _model = package.load_model("cpu")
    return int(_model.get_embedding_dimension() or 0)


def encode(texts: list[str], batch_size: int) -> NDArray[Any]:
    load()
    assert _model is not None
    return np.asarray(
        _model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    )


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)
