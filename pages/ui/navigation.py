"""The one workaround for Streamlit's legacy ``pages/`` mode, kept in one place.

The dashboard's pages live in a folder called ``pages/`` (the layout the
project asked for). When Streamlit starts, a ``pages/`` folder beside the
entry script makes it assume the *legacy* multipage mode, where a page URL
runs that page file alone, without ``dashboard.py`` and its sidebar. It only
learns otherwise when ``dashboard.py`` calls ``st.navigation`` — which does
not happen when the very first request to a fresh server goes straight to a
page URL (a shared link), nor in Streamlit's ``AppTest``, which resets the
flag before every run.

Both fixes set Streamlit's private ``PagesManager.uses_pages_directory``.
``tests/app/test_navigation.py`` fails loudly if a Streamlit upgrade removes
that attribute or stops needing the workaround.
"""

from __future__ import annotations

import streamlit as st


def _pages_manager():
    from streamlit.runtime.pages_manager import PagesManager

    return PagesManager


def rerun_through_entry_script() -> None:
    """A page ran alone (legacy mode): switch the mode off for this process and run again via dashboard.py."""
    _pages_manager().uses_pages_directory = False
    st.rerun()


def entry_script_for_every_run(monkeypatch) -> None:
    """For ``AppTest``: every run goes through ``dashboard.py``, as on a server that has served a page before.

    AppTest builds a new ``PagesManager`` (legacy mode on) for every run; this
    patches its constructor, through ``monkeypatch``, to turn the mode off.
    """
    manager = _pages_manager()
    original = manager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        manager.uses_pages_directory = False

    monkeypatch.setattr(manager, "__init__", init)
