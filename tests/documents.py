"""Files for the tests and benchmarks of document reading, made with real libraries: PDFs with
fpdf2 (read back with pypdf), DOCX with python-docx."""

from __future__ import annotations

import io
from collections.abc import Sequence

from docx import Document
from fpdf import FPDF


def pdf(pages: Sequence[str], *, password: str | None = None) -> bytes:
    """A PDF with one page per text (text a font can draw: Latin-1)."""
    doc = FPDF()
    doc.set_font("helvetica", size=11)
    if password is not None:
        doc.set_encryption(owner_password=password + "-owner", user_password=password)
    for text in pages:
        doc.add_page()
        doc.multi_cell(0, 5, text)
    return bytes(doc.output())


def scanned_pdf(pages: int) -> bytes:
    """A PDF whose pages hold only drawings: what a scan without a text layer reads as."""
    doc = FPDF()
    for _ in range(pages):
        doc.add_page()
        doc.rect(20, 20, 170, 250, style="F")
    return bytes(doc.output())


def docx(sections: Sequence[tuple[str, str]], *, page_breaks: bool = True) -> bytes:
    """A Word document: each (heading, text) a section, on a page of its own."""
    document = Document()
    for n, (heading, text) in enumerate(sections):
        if n and page_breaks:
            document.add_page_break()
        document.add_heading(heading, level=1)
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def filler(words: int, seed: int = 0) -> str:
    """Plausible prose with nothing to find in it."""
    vocabulary = (
        "the team reviewed schedule budget design notes options meeting draft points items "
        "before after during weekly quarterly updated summary further context general"
    ).split()
    return " ".join(vocabulary[(seed * 7 + i * 3) % len(vocabulary)] for i in range(words))
