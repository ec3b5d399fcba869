"""Saliency dashboard: `streamlit run dashboard.py`.

The entry file only sets the page up, draws the shared sidebar and hands over
to the page the user is on.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from pages.ui import sidebar, site
from saliency_core.export import map_to_rgb

# A radial "hot" blob drawn here: a Material icon as page_icon would be fetched
# from the internet, which an offline server can't reach.
_yy, _xx = np.mgrid[-1:1:64j, -1:1:64j]
ICON = Image.fromarray(map_to_rgb(np.clip(1 - np.hypot(_xx, _yy), 0, 1), "hot"))

st.set_page_config(page_title="Saliency dashboard", page_icon=ICON, layout="wide")

PAGES = [
    st.Page(p.file, title=p.title, icon=p.icon, url_path=p.url_path, default=p.url_path is None)
    for p in site.PAGES
]
page = st.navigation(PAGES)
sidebar.render_sidebar()
try:
    page.run()
finally:
    sidebar.end_of_run()
