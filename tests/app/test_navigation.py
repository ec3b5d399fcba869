"""The legacy ``pages/`` workaround (pages/ui/navigation.py) still matches what Streamlit does.

If one of these fails after a Streamlit upgrade, read ``pages/ui/navigation.py``:
either the private flag moved (update the workaround) or Streamlit no longer
assumes legacy mode for a ``pages/`` folder (delete the workaround).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pages_manager():
    from streamlit.runtime.pages_manager import PagesManager

    assert hasattr(PagesManager, "uses_pages_directory"), (
        "Streamlit's PagesManager.uses_pages_directory is gone: pages/ui/navigation.py must change")
    saved = PagesManager.uses_pages_directory
    PagesManager.uses_pages_directory = None
    yield PagesManager
    PagesManager.uses_pages_directory = saved


def test_streamlit_still_assumes_legacy_mode_for_our_pages_folder(pages_manager):
    pages_manager(str(REPO / "dashboard.py"))
    assert pages_manager.uses_pages_directory is True, (
        "Streamlit no longer starts in legacy mode because of pages/: the workaround can be removed")


def test_the_workaround_turns_legacy_mode_off_for_every_run(pages_manager, monkeypatch):
    from pages.ui.navigation import entry_script_for_every_run

    entry_script_for_every_run(monkeypatch)
    pages_manager(str(REPO / "dashboard.py"))
    assert pages_manager.uses_pages_directory is False


def test_the_page_files_are_exactly_the_pages():
    # Legacy mode treats every .py file directly in pages/ as a page: only the pages registered in
    # pages/ui/site.py (which dashboard.py reads) live there; the glue is in the pages/ui package.
    from pages.ui.site import PAGES

    registered = {p.file for p in PAGES}
    on_disk = {f"pages/{p.name}" for p in (REPO / "pages").glob("*.py") if p.name != "__init__.py"}
    assert registered and registered == on_disk
