"""Streamlit glue shared by the pages, one module per job.

``labels``        the names shown for methods, reductions, colour maps
``caches``        every ``st.cache_*`` wrapper around ``saliency_core``: the one place for caching
``waiting``       the compute queue, and what a page says while it waits (for its turn, or another session)
``url_state``     the view in the address bar, by option name
``image_sources`` samples, uploads, stored links and cs231n .npz files as images to analyse
``sidebar``       the shared sidebar and the current view; the top of every analysis page
``handover``      the Dataset page's "Open in Compare" / "Open in Methods" hand-overs
``navigation``    the one workaround for Streamlit's legacy ``pages/`` mode

The pages themselves (``pages/*.py``) only pick, call and draw. This folder
is a package, not a page: Streamlit's legacy multipage mode lists only the
``.py`` files directly in ``pages/``.
"""
