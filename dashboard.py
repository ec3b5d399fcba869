"""Saliency dashboard: `streamlit run dashboard.py`.

The entry file only sets the page up, lets the session through the sign-in
gate (only when ``.streamlit/secrets.toml`` has an ``[auth]`` section; see
``pages/ui/access.py``), draws the shared sidebar and hands over to the page
the user is on.
"""

from __future__ import annotations

import os

# Before torch loads: OpenMP threads that finish early sleep instead of spin-waiting. A shared
# server runs several sessions' work at once (and other programs); spinning threads then eat the
# cores the working ones need. Measured on the 2-core machine under load: the Faithfulness page's
# first curves 22.9 s -> 9.0 s (benchmarks/RESULTS.md). Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import streamlit as st
from PIL import Image

from pages.ui import access, sidebar, site, timing_log
from saliency_core.figures.map_files import map_to_rgb

timing_log.run_started()

# A radial "hot" blob drawn here: a Material icon as page_icon would be fetched
# from the internet, which an offline server can't reach.
_yy, _xx = np.mgrid[-1:1:64j, -1:1:64j]
ICON = Image.fromarray(map_to_rgb(np.clip(1 - np.hypot(_xx, _yy), 0, 1), "hot"))

st.set_page_config(page_title="Saliency dashboard", page_icon=ICON, layout="wide")

PAGES = [
    st.Page(p.file, title=p.title, icon=p.icon, url_path=p.url_path, default=p.url_path is None)
    for p in site.PAGES
]
gate = access.current()
# Before the gate lets a session in, not even the list of pages is shown.
page = st.navigation(PAGES, position="sidebar" if gate.lets_in else "hidden")
access.require_sign_in(page, PAGES, gate)  # the sign-in or "not allowed" page, then st.stop(); off without [auth]
with st.sidebar:
    access.account_box(gate)
sidebar.render_sidebar()
try:
    page.run()
finally:
    sidebar.end_of_run()
