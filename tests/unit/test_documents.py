"""Reading files: each format's text in sections that keep their place, and each way a file can
be unreadable named — made with the real libraries, parsed by the real ones."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from bot.core.config import Config, example_path, generate_tokens, load_config
from bot.documents.extract import Unreadable, detect, extract
from bot.documents.reader import extract_apart, file_name, reason
from tests.documents import docx, filler, pdf, scanned_pdf

LIMITS = {"max_pages": 100, "max_chars": 1_000_000}


def places(data: bytes, name: str, mimetype: str | None = None) -> list[tuple[str, str]]:
    return [(s.place, s.text) for s in extract(data, name, mimetype, **LIMITS).sections]


def test_a_pdf_is_read_page_by_page() -> None:
    result = extract(
        pdf(["First page text.", filler(30), "Third: the budget is 42,000."]),
        "a.pdf",
        None,
        **LIMITS,
    )
    assert result.pages == 3
    assert [(s.place, s.page) for s in result.sections] == [("p. 1", 1), ("p. 2", 2), ("p. 3", 3)]
    assert "42,000" in result.sections[2].text


def test_a_docx_keeps_its_headings_and_page_breaks() -> None:
    data = docx([("Overview", "Intro text."), ("Pricing", "A seat costs 17 euros.")])
    assert places(data, "plan.docx") == [
        ("p. 1, Overview", "Overview\nIntro text."),
        ("p. 2, Pricing", "Pricing\nA seat costs 17 euros."),
    ]
    flowing = docx([("Overview", "Intro."), ("Pricing", "17 euros.")], page_breaks=False)
    assert [p for p, _ in places(flowing, "plan.docx")] == ["Overview", "Pricing"]


def test_markdown_html_csv_and_code_keep_their_place() -> None:
    md = b"# Plan\nintro\n```\n# a comment, not a heading\n```\n## Costs\nIt costs 5.\n"
    assert [p for p, _ in places(md, "plan.md")] == ["Plan", "Costs"]
    html = b"<html><script>evil()</script><h1>Hello</h1><p>one</p><h2>Sub</h2><p>two</p></html>"
    sections = places(html, "page.html")
    assert [p for p, _ in sections] == ["Hello", "Sub"] and "evil" not in str(sections)
    rows = "item,cost\n" + "".join(f"thing {n},{n}\n" for n in range(50))
    csv_sections = places(rows.encode(), "costs.csv")
    assert [p for p, _ in csv_sections] == ["rows 2–41", "rows 42–51"]
    assert csv_sections[0][1].startswith("item: thing 0; cost: 0")
    code = "\n".join(f"line {n}" for n in range(1, 71))
    assert [p for p, _ in places(code.encode(), "main.py")] == ["lines 1–60", "lines 61–70"]


def test_text_in_another_encoding_is_decoded() -> None:
    text = "Größere Änderungen für die Übergabe, schöne Grüße. " * 20
    assert places(text.encode("cp1252"), "notes.txt")[0][1].startswith("Größere Änderungen")
    assert places(text.encode("utf-16"), "notes.txt")[0][1].startswith("Größere Änderungen")


@pytest.mark.parametrize(
    ("data", "name", "mimetype", "why"),
    [
        (pdf(["secret"], password="pw"), "locked.pdf", None, "protected"),
        (scanned_pdf(2), "scan.pdf", None, "no_text"),
        (b"%PDF-1.4 not really", "fake.pdf", None, "broken"),
        (b"PK\x03\x04 not a zip", "fake.docx", None, "broken"),
        (b"\x00\x01binary", "data.bin", "application/octet-stream", "unsupported"),
        (b"\x00\x01binary", "notes.txt", "text/plain", "unsupported"),
        (b"   \n\n  ", "empty.txt", None, "no_text"),
        (pdf([filler(10)] * 101), "long.pdf", None, "too_large"),
        (b"word " * 300_000, "long.txt", None, "too_large"),
    ],
)
def test_what_cannot_be_read_says_why(
    data: bytes, name: str, mimetype: str | None, why: str
) -> None:
    with pytest.raises(Unreadable) as caught:
        extract(data, name, mimetype, **LIMITS)
    assert caught.value.why == why


def test_a_zip_bomb_is_refused_before_it_is_unpacked() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\x00" * 250_000_000)
    with pytest.raises(Unreadable) as caught:
        extract(out.getvalue(), "bomb.docx", None, **LIMITS)
    assert caught.value.why == "too_large" and "unpacked" in caught.value.detail


def test_the_format_comes_from_the_content_first() -> None:
    assert detect("report", None, b"%PDF-1.7") == "pdf"
    assert detect("x.DOCX", None, b"PK") == "docx"
    assert detect("Dockerfile", None, b"FROM") == "code"
    assert detect("photo.jpg", "image/jpeg", b"\xff\xd8") is None


def test_file_names_lose_paths_and_control_characters() -> None:
    assert file_name({"body": "../../etc/passwd"}) == "passwd"
    assert file_name({"body": "C:\\Users\\x\\plan.pdf"}) == "plan.pdf"
    assert file_name({"body": "caption", "filename": "a\u202eb\nc.pdf"}) == "abc.pdf"
    assert file_name({"body": "x" * 500 + ".pdf"}).endswith("….pdf")
    assert file_name({}) == "file"


async def test_parsing_runs_apart_and_is_stopped_when_slow() -> None:
    result = await extract_apart(pdf(["Hello there."]), "a.pdf", None, timeout=30, **LIMITS)
    assert result.sections[0].text == "Hello there."
    with pytest.raises(Unreadable) as caught:
        await extract_apart(pdf([filler(300)] * 40), "a.pdf", None, timeout=0.05, **LIMITS)
    assert caught.value.why == "slow"


def test_every_reason_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(example_path().read_text())
    generate_tokens(path)
    config: Config = load_config(path, environ={})
    for why, detail in [
        ("unsupported", {"mimetype": "image/png"}),
        ("unsupported", {"binary": True}),
        ("broken", {"error": "PdfStreamError"}),
        ("protected", {}),
        ("too_large", {"pages": 600, "max_pages": 500}),
        ("too_large", {"chars": 3_000_000, "max_chars": 2_000_000}),
        ("too_large", {"size": 30_000_000}),
        ("too_large", {"unpacked": 1}),
        ("too_large", {"memory": True}),
        ("no_text", {}),
        ("slow", {}),
        ("undecryptable", {}),
        ("gone", {"error": "M_NOT_FOUND"}),
    ]:
        text = reason(Unreadable(why, detail), config)  # type: ignore[arg-type]
        assert text.endswith(".") and "{" not in text, (why, text)
