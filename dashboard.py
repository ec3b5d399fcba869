"""Saliency dashboard: `streamlit run dashboard.py`.

The entry file only sets the page up, draws the shared sidebar and hands over
to the page the user is on.
"""

from __future__ import annotations

import streamlit as st

from pages import common

st.set_page_config(page_title="Saliency dashboard", page_icon=":material/local_fire_department:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/saliency.py", title="Saliency", icon=":material/local_fire_department:", url_path="saliency"),
    st.Page("pages/compare.py", title="Compare score vs loss", icon=":material/compare:", url_path="compare"),
    st.Page("pages/gallery.py", title="Gallery", icon=":material/photo_library:", url_path="gallery"),
    st.Page("pages/statistics.py", title="Statistics", icon=":material/bar_chart:", url_path="statistics"),
]

page = st.navigation(PAGES)
common.render_sidebar()
page.run()
