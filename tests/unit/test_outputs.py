"""Lists in pages the homeserver accepts; people's text shown inline without its Markdown."""

from __future__ import annotations

import pytest

from appservice.matrix import render_markdown
from bot.commands.outputs import content_size, inline, page_number, page_of, pages
from bot.commands.parser import number
from bot.core.errors import UserError


def test_inline_text_cannot_add_lines_links_or_markup() -> None:
    shown = inline("line one\n- fake item\n[click](https://evil.example) <b>x</b> **y** `z`")
    html = render_markdown(shown)
    assert "\n" not in shown
    assert "<a" not in html and "<b>" not in html and "<strong>" not in html
    assert "<code>" not in html and "<li>" not in html


def test_inline_cuts_long_text_at_a_word() -> None:
    shown = inline("word " * 100, limit=50)
    assert len(shown) <= 50 and shown.endswith("word…")


@pytest.mark.parametrize("text", ["²", "١٢", "-1", "0", "2.5", "two", "9" * 30])
def test_page_numbers_are_plain_positive_numbers(text: str) -> None:
    with pytest.raises(UserError):
        page_number(text, "!sessions [PAGE]")


def test_number_accepts_ascii_digits_only() -> None:
    assert number(" 12 ") == 12
    assert number("²") is None and number("١٢") is None and number("") is None


def test_every_line_is_on_one_page_and_every_page_fits() -> None:
    lines = [f"- item {n} " + "é🙂" * (n % 7) * 10 for n in range(500)]
    found = pages("**Things**", lines, budget=8_000, per_page=25)
    assert [line for page in found for line in page] == lines
    for page in found:
        assert len(page) <= 25
        assert content_size("\n".join(["**Things**", *page, "", "_Page 10 of 20_ — …"])) <= 8_000


def test_a_line_alone_over_the_budget_is_cut() -> None:
    (page,) = pages("**Things**", ["x" * 50_000], budget=8_000)
    assert content_size(page[0]) < 8_000 and page[0].endswith("…")


def test_the_footer_says_how_to_go_on_and_is_not_part_of_the_last_item() -> None:
    lines = [f"- item {n}" for n in range(60)]
    first = page_of("**Things**", lines, page=1, command="!things")
    assert "Page 1 of 3" in first and "`!things 2` shows the next" in first
    assert render_markdown(first).rstrip().endswith("</p>")  # outside the list
    assert "Page 3 of 3." in page_of("**Things**", lines, page=3, command="!things")
    assert "Page" not in page_of("**Things**", lines[:3], page=1, command="!things")
    with pytest.raises(UserError, match="only 3 pages"):
        page_of("**Things**", lines, page=4, command="!things")
