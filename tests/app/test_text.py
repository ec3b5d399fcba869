"""pages/ui/text.plain: names from uploads and datasets render as text, never as links or images."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from pages.ui.text import plain

WORD_JOINER = "\u2060"  # what plain() puts where an autolink literal would start: invisible

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
    # What the reader sees is the name itself, line breaks folded into spaces (word joiners are invisible).
    shown = render(plain(name)).removeprefix("<p>").removesuffix("</p>\n")
    assert html.unescape(shown).replace(WORD_JOINER, "") == re.sub(r"[\r\n]+", " ", name)


# mdast-util-gfm-autolink-literal (remark-gfm, in Streamlit's frontend) runs these on the text once escapes are
# resolved: a backslash before ":" or "/" does not stop them. Its own regular expressions, in Python's syntax.
GFM_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE | re.ASCII)
GFM_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII)
AUTOLINKED = [
    "see http://127.0.0.1:8622/phish cat.jpg",
    "HTTPS://127.0.0.1:8622/PHISH.png",
    "docs at www.phish.example/net and WWW.PHISH.EXAMPLE",
    "write to help@phish.example or mailto:help@phish.example",
    "xmpp:someone@phish.example/desk",
    "(http://127.0.0.1:8622/x)_www.x.example_",
]


@pytest.mark.parametrize("name", AUTOLINKED)
def test_urls_and_addresses_in_names_are_no_autolink_literals(name):
    """The text remark-gfm scans (plain()'s output with its escapes resolved) holds no literal it links."""
    assert GFM_URL.search(name) or GFM_EMAIL.search(name)  # each would be a link unescaped
    decoded = html.unescape(render(plain(name))).removeprefix("<p>").removesuffix("</p>\n")
    assert not GFM_URL.search(decoded) and not GFM_EMAIL.search(decoded), decoded
    assert decoded.replace(WORD_JOINER, "") == name


def test_long_names_are_cut_and_line_breaks_folded():
    assert plain("a" * 1000, max_chars=10) == "a" * 9 + "…"
    assert "\n" not in plain("one\ntwo\r\nthree")
