"""The dashboard's pages, in menu order: one list that the entry script and the Home page both read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    file: str  # relative to the repository root, as st.Page wants it
    title: str
    icon: str
    url_path: str | None  # None: the default page, served at "/"
    summary: str  # one line for the Home page's links


PAGES = (
    PageInfo("pages/home.py", "Home", ":material/home:", None, "What this is and how to read a map"),
    PageInfo("pages/saliency.py", "Saliency", ":material/local_fire_department:", "saliency",
             "Top-5 predictions, the interactive map, overlay and downloads"),
    PageInfo("pages/compare.py", "Compare score vs loss", ":material/compare:", "compare",
             "Both maps side by side, their difference, agreement and the loss decomposition"),
    PageInfo("pages/methods.py", "Methods", ":material/grid_view:", "methods",
             "Every attribution method for one image: the maps, how much they agree, which to believe"),
    PageInfo("pages/gallery.py", "Gallery", ":material/photo_library:", "gallery",
             "Several images at once: the cs231n figure for both methods"),
    PageInfo("pages/statistics.py", "Statistics", ":material/bar_chart:", "statistics",
             "Per-map summaries, top pixels, histograms and provenance downloads"),
    PageInfo("pages/faithfulness.py", "Faithfulness", ":material/fact_check:", "faithfulness",
             "Deletion/insertion curves and model-randomisation sanity checks for both maps"),
    PageInfo("pages/dataset.py", "Dataset", ":material/dataset:", "dataset",
             "Results of the batch job for a whole dataset: filters, histograms, per-class means"),
)
