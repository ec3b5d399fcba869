"""Text from files, links and datasets is data: shown as text, never rendered as Markdown.

Streamlit renders Markdown (GitHub-flavoured, with links, images, LaTeX,
emoji and colour directives) in ``st.markdown``, ``st.caption``,
``st.error``/``st.info``/``st.warning``, image captions, ``st.metric``,
widget labels and more. An upload named ``![t](http://host/track.png)
cat.jpg`` would make every colleague who opens the shared link fetch that
URL. :func:`plain` escapes every character that Markdown, autolinks, LaTeX
and Streamlit's directives give a meaning to, so the name shows exactly as
it is. Use it for every file name, class name, dataset key, path and any
text read from an upload, a dataset or a results file.
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; escaping all of it
# also breaks autolinks ("http\:\/\/..."), emoji and directives (":red[...]")
# and LaTeX ("\$").
_PUNCTUATION = re.compile(r"""([!-/:-@\[-`{-~])""")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
MAX_CHARS = 300


def plain(value: object, max_chars: int = MAX_CHARS) -> str:
    """``value`` as text that Markdown shows literally, on one line, at most ``max_chars`` long."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return _PUNCTUATION.sub(r"\\\1", text)
