"""Every display choice of every page is in the link: a shared link shows what the sender sees.

On Saliency, viridis and "Overlay on the image" were lost: the link opened hot and Heatmap. Each page's
choices are set here as a user would (its widgets), the link is read back, and a fresh session opened on
that link must show the same choices; a link with an unusable value says so and shows the default.
"""

from __future__ import annotations

import pytest
from test_pages import PAGES, assert_healthy, shown

# page -> [(widget key, how the test sets it, the value it expects back)]
CHANGES = {
    "saliency": [("colorscale", "selectbox", "viridis"), ("saliency_view", "segmented", "Overlay on the image"),
                 ("opacity", "slider", 0.35), ("clip", "slider", (5.0, 95.5))],
    "compare": [("colorscale", "selectbox", "turbo"), ("shared_scale", "toggle", True)],
    "methods": [("colorscale", "selectbox", "gray")],
    "statistics": [("top_n", "number_input", 7)],
    "faithfulness": [("faith_steps", "slider", 10), ("faith_baseline", "selectbox", "black"),
                     ("faith_stages", "slider", 3)],
    "gallery": [("colorscale", "selectbox", "inferno"), ("gallery_cols", "slider", 3)],
}


def widget(at, key: str):
    for kind in ("selectbox", "slider", "toggle", "number_input", "segmented_control", "button_group"):
        for w in at.get(kind):
            if getattr(w, "key", None) == key:
                return w
    raise AssertionError(f"no widget {key!r}")


def value_of(at, key: str):
    return at.session_state[key]


def set_value(at, key: str, how: str, value) -> None:
    widget(at, key).set_value(value)
    at.run()


@pytest.mark.slow
@pytest.mark.parametrize("page", list(CHANGES))
def test_a_pages_choices_round_trip_through_its_link(new_app, page):
    query = {"deletion_steps": "10"} if page == "faithfulness" else {}
    at = new_app(PAGES[page], **query).run()
    assert_healthy(at)
    for key, how, value in CHANGES[page]:
        set_value(at, key, how, value)
        assert_healthy(at)
    link = {k: at.query_params[k] for k in at.query_params}
    guest = new_app(PAGES[page], **link).run()  # a colleague opens the link: a fresh session
    assert_healthy(guest)
    assert not guest.warning, [w.value for w in guest.warning]
    for key, _, value in CHANGES[page]:
        got = value_of(guest, key)
        assert (tuple(got) if isinstance(got, list) else got) == value, (page, key, got, link)
    assert {k: guest.query_params[k] for k in guest.query_params} == link  # and writes the same link back


@pytest.mark.parametrize(("page", "query", "says"), [
    ("saliency", {"colorscale": "rainbow"}, "colorscale=rainbow"),
    ("saliency", {"clip": "90-10"}, "clip=90-10"),
    ("saliency", {"view": "3d"}, "view=3d"),
    ("compare", {"shared": "yes"}, "shared=yes"),
    ("faithfulness", {"stages": "99"}, "stages=99"),
])
def test_an_unusable_choice_in_a_link_says_so_and_shows_the_default(new_app, page, query, says):
    at = new_app(PAGES[page], **query).run()
    assert_healthy(at)
    notices = [shown(w.value) for w in at.warning]
    assert any(says in n for n in notices), notices
