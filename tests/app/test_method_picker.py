"""The sidebar's Method choice, grouped by family (pages/ui/method_params.py, ``method_picker``).

Throwaway methods of the perturbation and CAM families are registered here
(:func:`saliency_core.methods.registry.registered`), so these tests do not
depend on which real methods of those families exist: a family select lists
the families that have a method the model can run, in FAMILIES' order; the
method select lists that family's methods by their titles, with each one's
paper in its help and the chosen one's under it; a link's ``?method=NAME``
selects its family and method; and a method the model can't run (its
``needs``) is not offered, with a note that says why: in the sidebar and in
the Methods page's own pick of methods.
"""

from __future__ import annotations

import pytest

from saliency_core.methods import gradient
from saliency_core.methods.declaration import AttributionMethod
from saliency_core.methods.registry import ATTRIBUTION_METHODS, by_family, registered
from tests.app.apptest import PAGES, assert_healthy, charts, shown, texts
from tests.app.test_own_models import models_dir  # noqa: F401 -- fixture: custom:tiny, a TorchScript model

pytestmark = pytest.mark.usefixtures("upload_dir")


def throwaway(name: str, title: str, family: str, needs: frozenset[str] = frozenset()) -> AttributionMethod:
    """A method of ``family`` that computes the plain gradient: where the dashboard lists it is what matters."""
    return AttributionMethod(name=name, title=title, citation=f"{title} et al. 2026", summary=f"{title} in words",
                             params=(), loss_objective="L", output="input", run=gradient.run, family=family,
                             needs=needs)


PERTURBATION = (throwaway("test_hide", "Hide", "perturbation"), throwaway("test_mask", "Mask", "perturbation"))
PERTURBATION_NAMES = tuple(m.name for m in PERTURBATION)
CAM_NEEDING_CONVS = throwaway("test_cam", "Test CAM", "CAM", frozenset({"conv_layer"}))


@pytest.fixture(scope="module", autouse=True)
def other_families():
    with registered(PERTURBATION[0]), registered(PERTURBATION[1]), registered(CAM_NEEDING_CONVS):
        yield


def titles(family: str, without: tuple[str, ...] = ()) -> list[str]:
    """The titles of a family's registered methods (the real ones and the throwaways above), in registry order."""
    return [ATTRIBUTION_METHODS[m].title for m in by_family()[family] if m not in without]


def family_labels(without: tuple[str, ...] = ()) -> list[str]:
    from pages.ui.labels import FAMILY_LABELS

    return [FAMILY_LABELS.get(f, f) for f in by_family() if f not in without]


def sidebar_captions(at) -> str:
    return texts(at.sidebar.caption)


def test_the_family_comes_first_and_the_method_select_lists_that_familys_titles(new_app):
    at = new_app(PAGES["home"]).run()
    assert_healthy(at)
    family = at.selectbox(key="method_family")
    assert family.options == family_labels(without=("attention",))  # the embedded CNN has no attention to read
    assert family.value == "gradient"
    method = at.selectbox(key="method")
    assert method.options == titles("gradient")  # no paper: short
    assert method.value == "gradient"
    # Each method's paper, one line each, in the select's help; the chosen one's under it.
    assert "SmoothGrad (Smilkov et al. 2017): the mean" in shown(method.help)
    assert "Guided backprop (Springenberg et al. 2015)" in shown(method.help)
    assert "Simonyan, Vedaldi & Zisserman 2014: the input gradient of the objective" in sidebar_captions(at)
    assert "forward passes only" in shown(family.help)  # what a family's members have in common

    family.set_value("perturbation").run()
    assert_healthy(at)
    assert at.selectbox(key="method").options == titles("perturbation")
    first = by_family()["perturbation"][0]
    assert at.selectbox(key="method").value == first  # the family's first method
    assert at.query_params["method"] == first
    assert ATTRIBUTION_METHODS[first].citation in sidebar_captions(at)
    at.selectbox(key="method").set_value("test_mask").run()
    at.selectbox(key="method_family").set_value("CAM").run()
    assert at.selectbox(key="method").options == titles("CAM")
    at.selectbox(key="method_family").set_value("perturbation").run()
    assert at.selectbox(key="method").value == "test_mask"  # the family's method chosen last, kept
    assert_healthy(at)


@pytest.mark.parametrize(("name", "family"), [
    ("test_mask", "perturbation"),
    ("integrated_gradients", "path"),
    ("grad_cam", "CAM"),
    ("smoothgrad", "gradient"),
])
def test_a_link_selects_the_methods_family_and_the_method(new_app, name, family):
    at = new_app(PAGES["home"], method=name).run()
    assert_healthy(at)
    assert not at.warning, [w.value for w in at.warning]  # the link was followed in full
    assert at.selectbox(key="method_family").value == family
    assert at.selectbox(key="method").value == name and at.selectbox(key="method").options == titles(family)
    assert at.query_params["method"] == name


def test_a_method_the_model_cannot_run_is_not_offered_and_the_sidebar_says_why(new_app, models_dir):  # noqa: F811
    at = new_app(PAGES["home"], model="custom:tiny").run()
    assert_healthy(at)
    # TorchScript hides its modules: nothing to hook (CAM) or swap (guided backprop).
    assert at.selectbox(key="method_family").options == family_labels(without=("reference", "CAM", "attention"))
    assert at.selectbox(key="method").options == titles("gradient", without=("guided_backprop",))
    note = sidebar_captions(at)
    assert "Not offered for Tiny colour net:" in note, note
    assert "Guided backprop (it needs nn.ReLU / nn.ReLU6 modules" in note, note
    # The CAM methods share one reason, said once.
    cams = ", ".join(titles("CAM"))
    assert f"{cams} (they need a convolutional layer" in note and note.count("convolutional layer") == 1, note


def test_a_link_to_a_method_the_model_cannot_run_says_so_and_shows_the_gradient(new_app, models_dir):  # noqa: F811
    at = new_app(PAGES["saliency"], model="custom:tiny", method="test_cam").run()
    assert_healthy(at)
    notice = texts(at.warning)
    assert "method=test_cam can't run on Tiny colour net: it needs a convolutional layer" in notice, notice
    assert at.selectbox(key="method").value == "gradient"
    assert "method" not in at.query_params  # the link now says what is shown: the plain gradient


def test_choosing_a_model_that_cannot_run_the_method_falls_back_with_a_word(new_app, models_dir):  # noqa: F811
    at = new_app(PAGES["home"], method="guided_backprop").run()
    assert at.selectbox(key="method").value == "guided_backprop"
    at.selectbox(key="model").set_value("custom:tiny").run()
    assert_healthy(at)
    assert at.selectbox(key="method").value == "gradient"
    said = texts(at.info)
    assert "Guided backprop can't run on Tiny colour net (it needs nn.ReLU" in said, said


# --------------------------------------------------------------------------- the Methods page's own pick


def test_the_methods_page_offers_only_what_the_model_can_run_and_names_the_rest(new_app, models_dir):  # noqa: F811
    from pages.ui import method_params

    at = new_app(PAGES["methods"], model="custom:tiny").run()
    assert_healthy(at)
    cannot = {"guided_backprop", "deeplift", "test_cam", *by_family()["CAM"],  # TorchScript: nothing to hook
              *by_family()["attention"]}
    pick = at.multiselect(key="methods_pick")
    assert pick.options == [method_params.method_label(m) for m in ATTRIBUTION_METHODS if m not in cannot]
    assert pick.value == [m for m in by_family()["gradient"] + PERTURBATION_NAMES
                          if m not in cannot and ATTRIBUTION_METHODS[m].default_view]
    assert "Left out" not in texts(at.info)  # the default losing what it can't run is not news: the note says it
    note = texts(at.main.caption)
    assert "Not offered for Tiny colour net: DeepLIFT (it needs" in note, note
    assert "; Guided backprop (it needs nn.ReLU / nn.ReLU6 modules" in note, note
    assert f"{', '.join(titles('CAM'))} (they need a convolutional layer" in note and "DeepLIFT (it needs" in note
    buttons = [b.label for b in at.button if b.key and b.key.startswith("methods_add_")]
    assert not any(label.startswith("+ CAM") for label in buttons), buttons
    assert any(label.startswith("+ gradient (") for label in buttons), buttons


def test_a_methods_link_asking_for_what_the_model_cannot_run_says_so_and_shows_the_rest(new_app,
                                                                                      models_dir):  # noqa: F811
    at = new_app(PAGES["methods"], model="custom:tiny", methods="gradient,grad_cam,guided_backprop").run()
    assert_healthy(at)
    said = texts(at.info)
    assert "Left out, as Tiny colour net can't run them: Grad-CAM (it needs a convolutional layer" in said, said
    assert "; Guided backprop (it needs nn.ReLU / nn.ReLU6 modules" in said, said
    assert at.multiselect(key="methods_pick").value == ["gradient"]
    grid = [t["name"] for t in charts(at)["grid"]["data"] if t.get("type") == "heatmap"]
    assert grid == ["Gradient · score", "Gradient · loss"]
    assert at.query_params["methods"] == "gradient"  # the link now says what is shown


def test_the_note_under_a_map_says_what_its_loss_map_is():
    """−L for a method whose sign matters, one map for both for a method without a target, nothing otherwise."""
    from pages.ui import method_params

    assert method_params.sign_note("grad_cam") == "Loss as −L: positive = evidence for the target."
    assert method_params.sign_note("attention_rollout") == ("Attention rollout has no target: its score and loss "
                                                            "maps are the same map.")
    assert method_params.sign_note("smoothgrad") is None
