"""The demo report: every section runs, the page is self-contained, and the numbers tell the tutorials' story."""

import json
import math
import re

import pytest
import torch
from PIL import Image

from scorefield import demo, report
from scorefield.cli import main
from scorefield.demo.experiments import run_naive_vs_annealed
from scorefield.distributions import two_gaussians
from scorefield.metrics import mode_weights
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
    density_grid=8,
)


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
        "ncsn",
        "diffusion",
        "likelihood",
        "moons",
        "numbers",
    ):
        assert f'id="{anchor}"' in page
    images = re.findall(r'src="data:image/(png|gif);base64,', page)
    assert images.count("gif") == 3  # Langevin, annealed Langevin, reverse SDE
    assert images.count("png") >= 12
    assert 'src="http' not in page and "<script" not in page  # nothing fetched, nothing run
    for name in ("score_field", "score_error", "naive_vs_annealed", "denoising_strip", "ode_trajectories"):
        assert (out / f"{name}.png").stat().st_size > 0


def test_the_animations_have_the_frames_asked_for(ran):
    out, _ = ran
    for name in ("langevin", "annealed_langevin", "reverse_sde"):
        with Image.open(out / f"{name}.gif") as gif:
            assert gif.n_frames == TINY.gif_frames


def test_results_json_holds_every_number_of_the_page(ran):
    out, results = ran
    stored = json.loads((out / "results.json").read_text())
    assert stored == json.loads(json.dumps(results))
    assert set(stored["score_matching"]) == {"esm", "ism_exact", "ism_hutchinson", "ssm", "dsm"}
    assert all(0.0 <= v["fisher"] < 2.0 for v in stored["score_matching"].values())
    samplers = stored["diffusion"]["samplers"]
    assert {"ode_dopri5", "ode_rk4"} <= set(samplers)
    assert len(samplers) == 2 + 2 * 3  # every predictor with and without the corrector
    assert samplers["ode_rk4"]["nfe"] == 4 * TINY.ode_steps
    assert samplers["euler_maruyama"]["nfe"] == TINY.pc_steps + 1  # plus the final denoising step
    assert samplers["euler_maruyama+langevin"]["nfe"] == 2 * TINY.pc_steps + 1
    lk = stored["likelihood"]
    assert math.isfinite(lk["model_nats"]) and lk["nfe"] > 0
    # the closed form of E_p[log p] for two separated unit Gaussians with weights 0.8 / 0.2
    closed = 0.8 * math.log(0.8) + 0.2 * math.log(0.2) - math.log(2 * math.pi * math.e)
    assert lk["closed_form_nats"] == pytest.approx(closed, abs=1e-7)  # weights held in float32
    assert set(stored["wall_s"]) == set(demo.SECTIONS) | {"total"}


def test_the_central_claim_holds_on_the_page(ran):
    # exact scores: naive Langevin keeps its uniform start's ~half/half split, annealing finds 0.8 / 0.2
    _, results = ran
    assert results["langevin"]["naive"]["error"] > 0.15
    assert results["langevin"]["annealed"]["error"] < 0.06


def test_naive_langevin_keeps_the_wrong_weights_and_annealing_recovers_them():
    mixture = two_gaussians(dtype=torch.float64)
    x0, naive, annealed = run_naive_vs_annealed(mixture, n=600, generator=make_generator(0))
    assert x0.shape == naive.shape == annealed.shape == (600, 2)
    naive_w, annealed_w = mode_weights(naive, mixture), mode_weights(annealed, mixture)
    # 600 samples: the standard error of a weight is about 0.016
    assert abs(float(naive_w[0]) - 0.5) < 0.1, naive_w  # the uniform start's split of the basins
    assert abs(float(annealed_w[0]) - 0.8) < 0.06, annealed_w


SMALL = demo.Budget(**{**TINY.__dict__, "sm_steps": 5, "ncsn_steps": 5, "vp_steps": 5, "moons_steps": 5})


def _numbers(results: dict) -> dict:
    """The results without the wall times, which are the only thing allowed to differ between runs."""
    text = re.sub(r'"(wall_s|train_s|sample_s|density_s|total)": [0-9.e-]+', '"time": 0', json.dumps(results))
    return {k: v for k, v in json.loads(text).items() if k != "wall_s"}


def test_scorefield_demo_writes_the_report_and_the_seed_fixes_every_number(ran, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "QUICK", SMALL)
    assert main(["demo", "--quick", "--quiet", "--seed", "3", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    from_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert from_cli["settings"]["quick"] is True
    again = demo.run_demo(tmp_path / "py", quick=True, budget=SMALL, progress=False, seed=3)
    assert _numbers(again) == _numbers(from_cli)
    assert _numbers(again) != _numbers(ran[1])  # and the budget matters
    assert report.run_demo is demo.run_demo  # the old address still runs it
