"""The demo report: every section runs, the page is self-contained and reads on a phone, its equations
are MathML, its numbers tell the tutorials' story, and it passes in a real browser where one is installed."""

import importlib.util
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image

from scorefield import demo
from scorefield.cli import main
from scorefield.demo.experiments import (
    classifier_two_sample_test,
    distance_to_arcs,
    kde_log_likelihood,
    line_mixture,
    run_naive_vs_annealed,
    standardized_mixture,
)
from scorefield.demo.mathml import tex
from scorefield.distributions import two_gaussians
from scorefield.metrics import mode_weights
from scorefield.scalers import Standardizer
from scorefield.utils import make_generator

TINY = demo.Budget(
    n_train=1000,
    batch_size=128,
    hidden=32,
    sm_steps=40,
    ncsn_steps=60,
    vp_steps=80,
    moons_steps=60,
    n_eval=300,
    n_samples=400,
    langevin_steps=150,
    n_steps_each=60,
    gif_particles=40,
    gif_steps=40,
    gif_frames=5,
    pc_steps=20,
    ode_steps=8,
    n_trajectories=10,
    n_test=40,
    n_solver_check=10,
    density_grid=8,
    kde_points=300,
)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    results = demo.run_demo(out, budget=TINY, progress=False, seed=3)
    return out, results


def test_the_page_is_one_self_contained_file_with_every_section(ran):
    out, _ = ran
    page = (out / "report.html").read_text()
    for anchor in (
        "score",
        "score-matching",
        "langevin",
        "noise",
        "ncsn",
        "diffusion",
        "likelihood",
        "moons",
        "numbers",
        "terms",
    ):
        assert f'id="{anchor}"' in page
    images = re.findall(r'src="data:image/(png|gif);base64,', page)
    assert images.count("gif") == 3  # Langevin, annealed Langevin, reverse SDE
    assert images.count("png") == 19
    assert 'src="http' not in page and "<script" not in page  # nothing fetched, nothing run
    for name in (
        "score_field", "score_lines", "score_divergence", "score_divergence_data", "interfering_sinks", "learned_score_field",
        "score_error", "naive_vs_annealed", "smoothing", "dsm_target", "noise_levels", "ncsn_samples",
        "forward_paths", "diffusion_1d", "denoising_chain", "ode_trajectories", "diffusion_samples", "moons_samples",
        "moons_density",
    ):  # fmt: skip
        assert (out / f"{name}.png").stat().st_size > 0, name
        assert f"({name}.png)" in page
    assert page.index('id="moons"') < page.index('id="numbers"')  # the table of numbers comes last


def test_the_page_reads_on_a_phone_and_its_figures_are_sharp(ran):
    out, _ = ran
    page = (out / "report.html").read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "max-width: 100%" in page and "overflow-x" not in page  # no box scrolls sideways
    assert (
        page.count('<source media="(max-width: 640px)" srcset="data:image/png;base64,') >= 5
    )  # stacked panels
    tables = re.findall(r"<table>", page)
    assert (
        len(tables) == len(re.findall(r'<div class="scroll"><table>', page)) >= 6
    )  # each scrolls on its own
    shown = re.findall(r'<img src="data:image/png;base64,[^"]+" width="(\d+)" height="(\d+)"', page)
    assert len(shown) == 19
    for (width, height), name in zip(shown, re.findall(r"\((\w+)\.png\)", page), strict=True):
        with Image.open(out / f"{name}.png") as png:
            assert abs(png.size[0] - 2 * int(width)) <= 1 and abs(png.size[1] - 2 * int(height)) <= 1, name
            assert png.size[0] >= 600, name  # 200 dpi: two device pixels per CSS pixel
    assert len(re.findall(r"<figcaption><b>Figure \d+\.</b>", page)) == 22
    assert "s_θ" not in page and "s_theta" not in page  # symbols are typeset, not spelled with underscores


def test_the_equations_are_mathml_in_the_tutorials_notation(ran):
    out, _ = ran
    page = (out / "report.html").read_text()
    maths = re.findall(r"<math[ >].*?</math>", page, flags=re.S)
    assert len(maths) >= 30
    for math_ in maths:
        ET.fromstring(math_)  # well-formed XML
    assert page.count('<math display="block"') >= 15
    # noise levels ascend, as in the score-functions tutorial: σ_1 is the smallest
    assert "σ<sub>1</sub> = 0.1" in page
    assert "<msub><mi>σ</mi><mn>1</mn></msub><mo>=</mo><mn>0.1</mn><mo>&lt;</mo>" in page
    assert tex(r"\tfrac12 \|s\|^2").count("<mfrac") == 1
    with pytest.raises(ValueError, match="unknown command"):
        tex(r"\notacommand x")


def test_the_page_cites_only_sections_of_docs_math_that_exist(ran):
    out, _ = ran
    page = (out / "report.html").read_text()
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "math.md").read_text(), flags=re.M)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    cited = set(re.findall(r"docs/math\.md#([a-z0-9-]+)", page))
    assert len(cited) >= 10
    assert cited <= anchors, cited - anchors
    assert "MATH" + ".md" not in page  # (spelt in two parts: test_docs.py forbids the name in the sources)


def test_the_animations_are_spread_over_the_motion(ran):
    out, results = ran
    for name in ("langevin", "reverse_sde"):
        with Image.open(out / f"{name}.gif") as gif:
            assert gif.n_frames == TINY.gif_frames
            assert gif.size == (630, 630)
    with Image.open(out / "annealed_langevin.gif") as gif:  # the start, every level, the denoised end
        assert gif.n_frames == results["ncsn"]["n_levels"] + 2


def test_results_json_holds_every_number_of_the_page(ran):
    out, results = ran
    stored = json.loads((out / "results.json").read_text())
    assert stored == json.loads(json.dumps(results))
    objectives = stored["score_matching"]["objectives"]
    assert set(objectives) == {"esm", "ism_exact", "ism_hutchinson", "ssm", "dsm"}
    assert all(0.0 <= v["fisher"] < 2.0 for v in objectives.values())
    assert 0.0 <= stored["score_matching"]["basins"]["wrong_fraction"] <= 1.0
    # the exact score's divergence at each mode of two unit Gaussians is -d / sigma^2 = -2, whatever the weight
    assert stored["score"]["divergence_at_modes"] == pytest.approx([-2.0, -2.0], abs=1e-6)
    assert stored["score"]["interfering"]["sinks"] == pytest.approx([-8.0, -2.0, -2 / 0.49])
    samplers = stored["diffusion"]["samplers"]
    assert {"ode_dopri5", "ode_rk4"} <= set(samplers)
    assert len(samplers) == 2 + 2 * 3  # every predictor with and without the corrector
    assert samplers["ode_rk4"]["nfe"] == 4 * TINY.ode_steps
    assert samplers["euler_maruyama"]["nfe"] == TINY.pc_steps + 1  # plus the final denoising step
    assert samplers["euler_maruyama+langevin"]["nfe"] == 2 * TINY.pc_steps + 1
    lk = stored["likelihood"]
    assert math.isfinite(lk["model_nats"]) and lk["nfe"] > 0
    assert abs(lk["pipeline_error_nats"]) < 1e-3  # the ODE with the exact score reproduces the exact density
    assert lk["solver_max_abs_nats"] < 0.05
    # the closed form of E_p[log p] for two separated unit Gaussians with weights 0.8 / 0.2
    closed = 0.8 * math.log(0.8) + 0.2 * math.log(0.2) - math.log(2 * math.pi * math.e)
    assert lk["closed_form_nats"] == pytest.approx(closed, abs=1e-7)  # weights held in float32
    assert set(stored["wall_s"]) == set(demo.SECTIONS) | {"total"}
    mo = stored["moons"]
    assert {"kde", "c2st", "c2st_reference", "off_arc_samples", "inner_tips_samples"} <= set(mo)
    assert 0.0 <= mo["c2st"]["accuracy"] <= 1.0 and mo["kde"]["bandwidth"] in mo["kde"]["bandwidths"]
    page = (out / "report.html").read_text()
    for value in (mo["kde"]["nats"], mo["test_log_likelihood_nats"], lk["error_nats"]):
        assert f"{value:.3f}" in page  # printed from the results, not written into the prose


def test_the_central_claim_holds_on_the_page(ran):
    # exact scores: naive Langevin keeps its uniform start's ~half/half split, annealing finds 0.8 / 0.2
    _, results = ran
    assert results["langevin"]["naive"]["error"] > 0.15
    assert results["langevin"]["annealed"]["error"] < 0.06


def test_naive_langevin_keeps_the_wrong_weights_and_annealing_recovers_them():
    mixture = two_gaussians(dtype=torch.float64)
    x_init, naive, annealed = run_naive_vs_annealed(mixture, n=600, generator=make_generator(0))
    assert x_init.shape == naive.shape == annealed.shape == (600, 2)
    naive_w, annealed_w = mode_weights(naive, mixture), mode_weights(annealed, mixture)
    # 600 samples: the standard error of a weight is about 0.016
    assert abs(float(naive_w[0]) - 0.5) < 0.1, naive_w  # the uniform start's split of the basins
    assert abs(float(annealed_w[0]) - 0.8) < 0.06, annealed_w


def _numbers(results: dict) -> dict:
    """The results without the wall times and the settings, which are the only things allowed to
    differ between two runs of one budget and one seed."""
    text = re.sub(
        r'"(wall_s|train_s|sample_s|density_s|checks_s|total)": [0-9.e-]+', '"time": 0', json.dumps(results)
    )
    return {k: v for k, v in json.loads(text).items() if k not in ("wall_s", "settings")}


def test_scorefield_demo_writes_the_report_and_the_seed_fixes_every_number(ran, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "QUICK", TINY)  # the command's --quick, on the fixture's budget
    assert main(["demo", "--quick", "--quiet", "--seed", "3", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    from_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert from_cli["settings"]["quick"] is True and from_cli["settings"]["moons_steps"] == TINY.moons_steps
    assert _numbers(from_cli) == _numbers(ran[1])  # one seed, one budget: the same numbers, run twice
    assert from_cli["moons"]["steps"] == TINY.moons_steps != demo.FULL.moons_steps  # and the budget is used


def test_the_mixture_in_other_coordinates_is_exact():
    mixture = two_gaussians(dtype=torch.float64)
    x = mixture.sample(500, generator=make_generator(0))
    scaler = Standardizer().fit(x)
    z = scaler.transform(x)
    standardised = standardized_mixture(mixture, scaler)
    # a density in standardised units is the density in data units minus the log-determinant
    assert torch.allclose(standardised.log_prob(z), mixture.log_prob(x) - scaler.log_det.double(), atol=1e-9)
    line = line_mixture(mixture, torch.tensor([1.0, 1.0]), standardize=False)
    assert line.means[:, 0].tolist() == pytest.approx([-5 * math.sqrt(2), 5 * math.sqrt(2)])
    assert line.covs.flatten().tolist() == pytest.approx([1.0, 1.0])
    unit = line_mixture(mixture, torch.tensor([1.0, 1.0]))
    sample = unit.sample(20_000, generator=make_generator(1))
    assert float(sample.mean()) == pytest.approx(0.0, abs=0.03) and float(sample.std()) == pytest.approx(
        1.0, abs=0.03
    )


def test_the_moons_checks_see_samples_off_the_arcs():
    from scorefield import datasets

    data = datasets.moons(600, generator=make_generator(0))
    more = datasets.moons(600, generator=make_generator(1))
    assert float((distance_to_arcs(data) > 0.15).double().mean()) < 0.02  # three noise standard deviations
    blurred = data + 0.25 * torch.randn(
        data.shape, generator=make_generator(2)
    )  # fills the gap between the arcs
    same = classifier_two_sample_test(more, data, seed=0)
    different = classifier_two_sample_test(blurred, data, seed=0)
    assert abs(same.accuracy - 0.5) < 4 * same.stderr
    assert different.accuracy > 0.5 + 5 * different.stderr
    kde = kde_log_likelihood(data, more, cv_points=300, seed=0)
    assert 0.01 < kde.bandwidth < 0.2 and math.isfinite(kde.nats)


def _browser_check():
    spec = importlib.util.spec_from_file_location("check_report", ROOT / "tools" / "check_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_passes_in_a_real_browser(ran):
    check = _browser_check()
    if check.find_chromium() is None:
        pytest.skip("no Chromium installed")
    out, _ = ran
    for result in check.check_report(out / "report.html"):  # 1280 px desktop, 400 px phone and desktop
        assert result["problems"] == [], (result["width"], result["device"], result["problems"])
        assert result["images"] == 22 and result["maths"] >= 30
