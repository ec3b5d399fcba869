"""pages/ui/text.plain: names from uploads and datasets render as text, never as links or images."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from pages.ui.text import plain

HOSTILE = [
    "![t](http://127.0.0.1:8622/track.png) [docs](http://127.0.0.1:8622/phish) cat.jpg",
    "<img src=x onerror=alert(1)> <script>alert(1)</script>.png",
    "http://127.0.0.1:8622/auto www.example.com mail@example.com",
    "# heading\n- item\n> quote\n```code```",
    "$x^2$ :red[alarm] :material/home: **bold** _it_ ~~s~~ `tick` | a | b |",
    "back\\slash [ref]: http://x.example/y",
]


def render(markdown: str) -> str:
    return MarkdownIt("gfm-like").render(markdown)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_render_as_the_same_text_with_no_markup(name):
    rendered = render(f"From **{plain(name)}** ok")
    for tag in ("<a ", "<img", "<script", "<h1", "<li", "<blockquote", "<code", "<del", "<em", "<table"):
        assert tag not in rendered, (name, rendered)
    # What the reader sees is the name itself, line breaks folded into spaces.
    shown = render(plain(name)).removeprefix("<p>").removesuffix("</p>\n")
    assert html.unescape(shown) == re.sub(r"[\r\n]+", " ", name)


def test_long_names_are_cut_and_line_breaks_folded():
    assert plain("a" * 1000, max_chars=10) == "a" * 9 + "…"
    assert "\n" not in plain("one\ntwo\r\nthree")
