"""Text from files, links and datasets is data: shown as text, never rendered as Markdown.

Streamlit renders Markdown (GitHub-flavoured, with links, images, LaTeX,
emoji and colour directives) in ``st.markdown``, ``st.caption``,
``st.error``/``st.info``/``st.warning``, image captions, ``st.metric``,
widget labels and more. An upload named ``![t](http://host/track.png)
cat.jpg`` would make every colleague who opens the shared link fetch that
URL. :func:`plain` escapes every character that Markdown, autolinks, LaTeX
and Streamlit's directives give a meaning to, so the name shows exactly as
it is. Use it for every file name, class name, dataset key, path, model
title and any text read from an upload, a dataset, a results file or a
models folder.

Escaping is not enough for GitHub's *autolink literals*: remark-gfm, which
Streamlit's frontend uses, finds ``http://``, ``https://``, ``www.`` and
``name@host.tld`` in the text after escapes are resolved, so an upload
named ``see http://127.0.0.1:8622/phish cat.jpg`` became a link for everyone
who opened the shared view. An invisible U+2060 WORD JOINER where such a
literal would start (inside ``://``, between ``www`` and its dot, after
``@``) breaks the pattern and leaves what people read unchanged.
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; escaping all of it
# also breaks autolinks ("http\:\/\/..."), emoji and directives (":red[...]")
# and LaTeX ("\$").
_PUNCTUATION = re.compile(r"""([!-/:-@\[-`{-~])""")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
WORD_JOINER = "\u2060"
# Where a GFM autolink literal would start: "://" (http, https, any scheme), "www." and the domain after "@",
# in any case ("HTTP://", "WWW.").
_AUTOLINK_STARTS = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
MAX_CHARS = 300


def plain(value: object, max_chars: int = MAX_CHARS) -> str:
    """``value`` as text that Markdown shows literally, on one line, at most ``max_chars`` long (not counting
    the invisible word joiners that keep URLs and addresses in it from becoming links)."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    text = _AUTOLINK_STARTS.sub(WORD_JOINER, text)
    return _PUNCTUATION.sub(r"\\\1", text)
