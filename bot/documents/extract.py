"""A file's text, in sections that keep their place: a PDF's pages, a DOCX's or Markdown's or
HTML's headings (and a DOCX's page breaks), a CSV's row ranges, a text or code file's line
ranges. Well-kept libraries do the parsing (pypdf, python-docx, Beautiful Soup,
charset-normalizer); nothing here parses a format by hand but CSV (the standard library) and
Markdown headings.

This runs in a process of its own (bot.documents.extract_worker), with limits on memory and
time: a hostile file can make a parser slow or greedy, and must not take the bot with it.
Pure functions of the bytes; each failure is an `Unreadable` that says why, in the words the
room is told.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

Format = Literal["pdf", "docx", "markdown", "html", "csv", "code", "text"]
FORMAT_NAMES: dict[Format, str] = {
    "pdf": "PDF",
    "docx": "Word document",
    "markdown": "Markdown",
    "html": "HTML page",
    "csv": "spreadsheet (CSV)",
    "code": "code file",
    "text": "text file",
}

Why = Literal[
    "unsupported",
    "broken",
    "protected",
    "too_large",
    "no_text",
    # Found by the reader, outside the parsing:
    "slow",
    "undecryptable",
    "gone",
]

DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
CODE_EXTENSIONS = frozenset(
    """.py .pyi .js .mjs .cjs .ts .tsx .jsx .go .rs .java .kt .kts .scala .c .h .cc .cpp .cxx
    .hpp .cs .rb .php .swift .m .mm .sh .bash .zsh .fish .ps1 .sql .r .lua .pl .pm .hs .ex .exs
    .erl .clj .dart .vue .svelte .css .scss .less .yaml .yml .toml .ini .cfg .conf .json .jsonc
    .xml .proto .graphql .tf .nix .dockerfile .gradle .cmake .mk .makefile""".split()
)
TEXT_EXTENSIONS = frozenset(".txt .text .log .rst .adoc .org .tex .srt .vtt".split())
CODE_NAMES = frozenset({"dockerfile", "makefile", "justfile", "gemfile", "rakefile"})

LINES_PER_SECTION = 60
ROWS_PER_SECTION = 40
MIN_PAGE_CHARS = 5
"""A page with fewer letters and digits than this has no text worth reading (a scan, a figure)."""
MAX_UNZIPPED = 200_000_000
"""A DOCX is a zip: what its parts may add up to once unpacked (a zip bomb is refused)."""


@dataclass(frozen=True, slots=True)
class Section:
    place: str
    """Where in the file: "p. 3", "Pricing", "p. 2, Pricing", "rows 2–41", "lines 61–120"."""
    text: str
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Extracted:
    format: Format
    sections: tuple[Section, ...]
    pages: int | None = None
    """A PDF's pages (a DOCX's, when it has page breaks); None for formats without pages."""
    empty_pages: int = 0
    """Pages without text (scanned, or figures only): said in the notice when there are many."""


@dataclass(slots=True)
class Unreadable(Exception):
    why: Why
    detail: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.why} {self.detail}"


def detect(name: str, mimetype: str | None, head: bytes) -> Format | None:
    """The format to read the file as, from its first bytes, its name and its MIME type (as
    the sender's client said; the content decides where it can)."""
    path = PurePosixPath(name.lower())
    ext = path.suffix
    mime = (mimetype or "").split(";")[0].strip().lower()
    if head.startswith(b"%PDF-") or ext == ".pdf" or mime == "application/pdf":
        return "pdf"
    if ext == ".docx" or mime == DOCX_MIME:
        return "docx"
    if ext in (".md", ".markdown") or mime == "text/markdown":
        return "markdown"
    if ext in (".html", ".htm", ".xhtml") or mime in ("text/html", "application/xhtml+xml"):
        return "html"
    if ext in (".csv", ".tsv") or mime in ("text/csv", "text/tab-separated-values"):
        return "csv"
    if ext in CODE_EXTENSIONS or path.name in CODE_NAMES:
        return "code"
    if ext in TEXT_EXTENSIONS or mime.startswith("text/"):
        return "text"
    return None


def extract(
    data: bytes, name: str, mimetype: str | None, *, max_pages: int, max_chars: int
) -> Extracted:
    fmt = detect(name, mimetype, data[:8])
    if fmt is None:
        raise Unreadable("unsupported", {"mimetype": mimetype or ""})
    if fmt == "pdf":
        result = _pdf(data, max_pages)
    elif fmt == "docx":
        result = _docx(data, max_pages)
    elif fmt == "html":
        result = Extracted("html", tuple(_by_headings(_html_lines(data))))
    else:
        text = decode(data)
        if fmt == "markdown":
            result = Extracted("markdown", tuple(_by_headings(_markdown_lines(text))))
        elif fmt == "csv":
            result = Extracted("csv", tuple(_csv(text, tab=name.lower().endswith(".tsv"))))
        else:
            result = Extracted(fmt, tuple(_by_lines(text)))
    chars = sum(len(s.text) for s in result.sections)
    if chars > max_chars:
        raise Unreadable("too_large", {"chars": chars, "max_chars": max_chars})
    if not any(_letters(s.text) >= 1 for s in result.sections):
        raise Unreadable("no_text", {"format": fmt, "pages": result.pages})
    return result


def decode(data: bytes) -> str:
    """A text file's bytes as text: UTF-8 (with or without a BOM), or the encoding
    charset-normalizer finds; binary data is refused."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Unreadable("unsupported", {"binary": True})
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if len(data) < 256:  # too little for a guess: the most common 8-bit encoding
        return data.decode("cp1252", errors="replace")
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise Unreadable("broken", {"encoding": "unknown"})
    return str(best)


def _letters(text: str) -> int:
    return sum(c.isalnum() for c in text)


# -- PDF ---------------------------------------------------------------------------------------


def _pdf(data: bytes, max_pages: int) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("protected", {})
        count = len(reader.pages)
    except Unreadable:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise Unreadable("broken", {"error": type(e).__name__}) from None
    if count > max_pages:
        raise Unreadable("too_large", {"pages": count, "max_pages": max_pages})
    sections = []
    empty = 0
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise Unreadable("broken", {"error": type(e).__name__, "page": number}) from None
        if _letters(text) < MIN_PAGE_CHARS:
            empty += 1
            continue
        sections.append(Section(f"p. {number}", text.strip(), page=number))
    if not sections:
        raise Unreadable("no_text", {"format": "pdf", "pages": count})
    return Extracted("pdf", tuple(sections), pages=count, empty_pages=empty)


# -- DOCX --------------------------------------------------------------------------------------


def _docx(data: bytes, max_pages: int) -> Extracted:
    import docx
    from docx.oxml.ns import qn
    from docx.table import Table

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNZIPPED:
            raise Unreadable("too_large", {"unpacked": unpacked})
        document = docx.Document(io.BytesIO(data))
    except Unreadable:
        raise
    except Exception as e:  # noqa: BLE001 — python-docx raises many kinds for a bad file
        raise Unreadable("broken", {"error": type(e).__name__}) from None

    body = document.element.body
    rendered = any(True for _ in body.iter(qn("w:lastRenderedPageBreak")))
    explicit = any(br.get(qn("w:type")) == "page" for br in body.iter(qn("w:br"))) or any(
        True for _ in body.iter(qn("w:pageBreakBefore"))
    )
    paged = rendered or explicit

    def breaks_in(element: object) -> int:
        el = getattr(element, "_element", None)
        if el is None:
            return 0
        if rendered:
            return sum(1 for _ in el.iter(qn("w:lastRenderedPageBreak")))
        count = sum(1 for br in el.iter(qn("w:br")) if br.get(qn("w:type")) == "page")
        return count + sum(1 for _ in el.iter(qn("w:pageBreakBefore")))

    sections: list[Section] = []
    page = 1
    heading = ""
    lines: list[str] = []

    def place() -> str:
        parts = [f"p. {page}"] if paged else []
        if heading:
            parts.append(heading)
        return ", ".join(parts) or "start"

    def flush() -> None:
        text = "\n".join(line for line in lines if line.strip())
        if text.strip():
            sections.append(Section(place(), text, page=page if paged else None))
        lines.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                lines.append(" | ".join(dict.fromkeys(c for c in cells if c)))
            continue
        text = block.text.strip()
        style = (block.style.name if block.style is not None else "") or ""
        breaks = breaks_in(block)
        if breaks and text and not rendered and not _break_before(block):
            # A page break inside the paragraph (Word's Ctrl+Enter): its text ends this page.
            lines.append(text)
            text = ""
        if breaks:
            flush()
            page += breaks
            if page > max_pages:
                raise Unreadable("too_large", {"pages": page, "max_pages": max_pages})
            if not text:
                continue
        if style.startswith("Heading") or style == "Title":
            flush()
            heading = _short(text)
            lines.append(text)
            continue
        lines.append(text)
    flush()
    return Extracted("docx", tuple(sections), pages=page if paged else None)


def _break_before(block: object) -> bool:
    """Whether a paragraph starts on a new page (its page break comes before its text)."""
    from docx.oxml.ns import qn

    el = getattr(block, "_element", None)
    return el is not None and any(True for _ in el.iter(qn("w:pageBreakBefore")))


def _short(heading: str, limit: int = 80) -> str:
    heading = " ".join(heading.split())
    return heading if len(heading) <= limit else heading[: limit - 1] + "…"


# -- Markdown and HTML: sections under headings -------------------------------------------------

_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = "\x00heading\x00"


def _markdown_lines(text: str) -> Iterator[str]:
    """The lines, with headings marked (not inside code blocks)."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _MD_HEADING.match(line)):
            yield _HEADING + m.group(2)
            continue
        yield line


def _html_lines(data: bytes) -> Iterator[str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        tag.decompose()
    for tag in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        tag.replace_with(f"\n{_HEADING}{' '.join(tag.get_text(' ').split())}\n")
    yield from soup.get_text("\n").splitlines()


def _by_headings(lines: Iterator[str]) -> Iterator[Section]:
    heading = ""
    buffer: list[str] = []
    for line in lines:
        if line.startswith(_HEADING):
            if any(b.strip() for b in buffer):
                yield Section(heading or "start", "\n".join(buffer).strip())
            heading = _short(line.removeprefix(_HEADING))
            buffer = [heading]
            continue
        buffer.append(line)
    if any(b.strip() for b in buffer):
        yield Section(heading or "start", "\n".join(buffer).strip())


# -- CSV, text and code: sections of rows and lines ---------------------------------------------


def _csv(text: str, *, tab: bool) -> Iterator[Section]:
    delimiter = "\t" if tab else ","
    if not tab:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            pass
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    buffer: list[str] = []
    first = 2
    try:
        for number, row in enumerate(rows, start=1):
            if header is None:
                header = [h.strip() for h in row]
                continue
            cells = [
                f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {v.strip()}"
                for i, v in enumerate(row)
                if v.strip()
            ]
            buffer.append("; ".join(cells))
            if len(buffer) == ROWS_PER_SECTION:
                yield Section(f"rows {first}–{number}", "\n".join(buffer))
                buffer, first = [], number + 1
    except csv.Error as e:
        raise Unreadable("broken", {"error": str(e)[:80]}) from None
    if buffer:
        yield Section(f"rows {first}–{first + len(buffer) - 1}", "\n".join(buffer))


def _by_lines(text: str) -> Iterator[Section]:
    lines = text.splitlines()
    for start in range(0, len(lines), LINES_PER_SECTION):
        chunk = lines[start : start + LINES_PER_SECTION]
        if any(line.strip() for line in chunk):
            yield Section(f"lines {start + 1}–{start + len(chunk)}", "\n".join(chunk))
