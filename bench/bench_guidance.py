"""Digits, conditioned: classifier-free guidance and inpainting with one class-conditional ``digits_vp``.

The preset ``configs/digits_cond_vp.toml`` (``digits_vp`` with ``model.num_classes = 10`` and
``train.label_dropout = 0.1``: one label in ten becomes the null label, so the same network learns
``p(x)``, which both guidance and inpainting use) is trained as it is into ``runs/bench_guidance``
(resumed if it is there).

- Guidance (Ho & Salimans 2022): for each weight ``w`` in 0, 0.5, 1, 2, 4, 144 samples of each digit
  (1,440 in all, the run's ``dpm`` sampler (DPM-Solver++2M) with 20 steps; the same noise for every ``w``), classified by the digits
  evaluation classifier (``scorefield.eval.classifier``): the fraction classified as the digit asked
  for, the Fréchet distance of all 1,440 to the test split against its floor (the training split's
  distance), and the spread within each class against the training split's, which shows what guidance
  trades for accuracy.
- Inpainting: every test image (359, never trained on) with its top half observed and its bottom half
  filled by ``Run.inpaint`` (the replacement method with RePaint's resampling, and sequential Monte
  Carlo, its default) under a model of ``p(x)``, which has to read the digit from the top half: the
  conditional run's null label (``choose=False``); the conditional run as ``Run.inpaint`` uses it
  without a label, each row completed as the digit its top half most probably shows under the run's
  class Gaussians; and the ``digits_vp`` preset that ``bench_digits`` trains (a mixture
  of models of 40 k-means clusters of the pixels, no digit labels; ``Run.inpaint`` fills each row
  from the cluster its top half most probably came from). The completions are
  classified and the fraction classified as the image's true digit reported, against references: the
  originals, the bottom half left blank, a k-nearest-neighbour completion, and classifiers of the top
  halves alone (5-NN and an RBF support vector classifier: what the top half tells, with no completion
  at all), each compared with the best completion on the same images by McNemar's exact test. Observed
  pixels are given at the centre of their grey level's bin, as the model learned dequantized pixels.

``--quick`` trains a few steps and draws a few samples: a smoke test whose numbers mean nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch

from bench import common
from bench.bench_digits import trained_run as digits_run
from bench.common import markdown_table, write_results
from scorefield.eval.classifier import (
    DIGITS_LEVELS,
    DigitsClassifier,
    digits_split,
    floor,
    frechet_digits_distance,
    scale_digits,
    to_levels,
)
from scorefield.run.config import load_config
from scorefield.run.finished import Run, load_run
from scorefield.run.train import train
from scorefield.viz import image_grid

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "digits_cond_vp.toml"
QUICK = ["train.steps=20", "train.ckpt_every=20"]
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
STEPS = 20  # the dpm sampler's steps (DPM-Solver++2M): bench/results/digits.md finds 20 as good as 50 here
# (model, score evaluations per image, resample, particles): RePaint (50 steps of 4, 20 of 50), then sequential
# Monte Carlo (Run.inpaint's default, 8 particles on 25 steps, and 32 particles on 50), on the conditional
# run's null label (choose=False), on the conditional run as Run.inpaint uses it without a label (each row
# as its most probable digit) and on the digits_vp preset (bench_digits' run: a mixture of 40 cluster models)
NULL, CHOSEN = "null label", "most probable digit"
INPAINT = (
    (NULL, 201, 4, 1), (NULL, 1001, 50, 1), (NULL, 26, 1, 8), (NULL, 51, 1, 32), (CHOSEN, 26, 1, 8),
    ("digits_vp", 201, 4, 1), ("digits_vp", 26, 1, 8), ("digits_vp", 51, 1, 32),
)  # fmt: skip
GUIDANCE_TARGET, INPAINT_TARGET = 0.95, 0.90


class Clock:
    """Wall and CPU seconds of each stage, in order."""

    def __init__(self) -> None:
        self.rows: list[list] = []

    def __call__(self, name: str, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.rows.append([name, f"{time.perf_counter() - wall:.1f}", f"{time.process_time() - cpu:.1f}"])
        return result


def trained_run(quick: bool, clock: Clock) -> Run:
    run_dir = ROOT / "runs" / ("bench_guidance_quick" if quick else "bench_guidance")
    config = load_config(CONFIG, QUICK if quick else [])
    result = clock(
        f"training runs/{run_dir.name} to step {config.train.steps} (resumed: only what is left)",
        lambda: train(config, run_dir, resume=True, progress=False),
    )
    if result.interrupted:
        raise SystemExit(f"training interrupted at step {result.step}; run the benchmark again to resume it")
    run = load_run(run_dir)
    if run.component_moments is None or run.class_weights is None:  # it cannot choose a row's digit
        raise SystemExit(
            f"{run_dir} was trained before runs kept their classes' Gaussians and shares (how inpainting "
            "chooses a row's digit); move it away and run the benchmark again to retrain it"
        )
    return run


def spread(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over classes of the RMS distance (grey levels) of a class's images to their class mean."""
    flat = x.flatten(1).double()
    per_class = [(flat[y == k] - flat[y == k].mean(0)).pow(2).sum(1).mean().sqrt() for k in y.unique()]
    return float(torch.stack(per_class).mean())


def guidance_table(run: Run, classifier: DigitsClassifier, per_class: int, quick: bool, clock: Clock):
    split = digits_split()
    floor_fd, x_test = floor(classifier), scale_digits(split.x_test)
    data_spread = spread(split.x_train, split.y_train)
    dequantized = bool(run.config.data.dequantize)
    labels = torch.arange(10).repeat_interleave(per_class)
    rows, firsts = [], []
    for w in WEIGHTS:

        def draw(w=w):
            return torch.cat(
                [
                    run.sample(per_class, "dpm", STEPS, seed=k, label=k, guidance=w).reshape(-1, 1, 8, 8)
                    for k in range(10)
                ]
            )

        n_evals = 10 * per_class * STEPS * (2 if w else 1)
        levels = to_levels(
            clock(f"guidance w={w:g}: {10 * per_class} samples, {n_evals} network evaluations", draw),
            dequantized,
        )
        scaled = scale_digits(levels)
        accuracy = classifier.accuracy(scaled, labels)
        fd = frechet_digits_distance(scaled, x_test, classifier, allow_small=quick)
        rows.append(
            [f"{w:g}", accuracy, interval(accuracy, labels.numel()), fd, fd / floor_fd,
             spread(levels, labels) / data_spread]
        )  # fmt: skip
        firsts.append(levels[::per_class])  # the first sample of each digit
    unconditional = to_levels(
        run.sample(10 * per_class, "dpm", STEPS, seed=10).reshape(-1, 1, 8, 8), dequantized
    )
    fd = frechet_digits_distance(scale_digits(unconditional), x_test, classifier, allow_small=quick)
    rows.append(["no label (the null label: p(x))", "-", "-", fd, fd / floor_fd, "-"])
    image_grid(
        torch.cat(firsts),
        nrow=10,
        value_range=(0, DIGITS_LEVELS),
        scale=4,
        path=common.RESULTS / "guidance_samples.png",
    )
    header = [
        "guidance w",
        "classified as the digit asked for",
        "its 95% interval (Wilson)",
        f"Fréchet distance ({10 * per_class} samples vs test split)",
        f"ratio to floor ({floor_fd:.3f})",
        "within-class spread / training split's",
    ]
    return markdown_table(header, rows), rows


def knn_references(x_test: torch.Tensor, observed: torch.Tensor) -> dict:
    """Completions by the training images nearest in the observed pixels: the mean of the 5 nearest
    (a point estimate, as ``KNNImputer`` gives) and the nearest one (a single plausible draw); and the
    digits that classifiers of the observed pixels alone predict (a 5-NN classifier and scikit-learn's
    RBF support vector classifier with its defaults), what the top half tells with no completion."""
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
    from sklearn.svm import SVC

    split = digits_split()
    keep = observed.reshape(-1)
    train_obs, test_obs = split.x_train.flatten(1)[:, keep].numpy(), x_test.flatten(1)[:, keep].numpy()
    _, nearest = NearestNeighbors(n_neighbors=5).fit(train_obs).kneighbors(test_obs)
    neighbours = split.x_train[torch.from_numpy(nearest)]  # [N, 5, 1, 8, 8]
    classifiers = {"5-NN classifier": KNeighborsClassifier(5), "support vector classifier (RBF)": SVC()}
    return {
        "mean of 5": torch.where(observed, x_test, neighbours.mean(1)),
        "nearest": torch.where(observed, x_test, neighbours[:, 0]),
        "top half": {
            name: torch.from_numpy(c.fit(train_obs, split.y_train.numpy()).predict(test_obs))
            for name, c in classifiers.items()
        },
    }


def interval(accuracy: float, n: int) -> str:
    """The 95% Wilson score interval of an accuracy measured on ``n`` images, as ``low-high``."""
    from scipy.stats import binomtest

    ci = binomtest(round(accuracy * n), n).proportion_ci(0.95, method="wilson")
    return f"{ci.low:.3f}-{ci.high:.3f}"


def bounds(text: str) -> tuple[float, float]:
    """The two ends of an ``interval`` as it is written in a table."""
    low, high = text.split("-")
    return float(low), float(high)


def paired_test(right: torch.Tensor, other: torch.Tensor) -> tuple[int, int, float]:
    """McNemar's exact test of two methods' per-image successes on the same images: the images only the
    first gets right, those only the second does, and the two-sided p-value of so uneven a split if
    either were as likely (a binomial test on the discordant images)."""
    from scipy.stats import binomtest

    first, second = int((right & ~other).sum()), int((~right & other).sum())
    return first, second, float(binomtest(first, first + second).pvalue) if first + second else 1.0


FIGURE = ("digits_vp", 51, 32)  # the completions the figure shows
HANDED, HANDED_GUIDANCE = "support vector classifier (RBF)", 0.5  # the classifier whose digit is handed over


def cluster_choice_rows(
    run: Run, x_test: torch.Tensor, y_test: torch.Tensor, observed: torch.Tensor
) -> list[list]:
    """How often the cluster a clustered run fills an image from has the image's digit as its majority
    digit (by the training split's labels, which the run never saw): the run's choice from the top half,
    the nearest centroid on the top half, and the cluster of the whole image (what a perfect choice from
    the top half could reach)."""
    split = digits_split()

    def units(x: torch.Tensor) -> torch.Tensor:
        return run.scaler.transform(x + 0.5 if run.config.data.dequantize else x)

    clusters = run.nearest_cluster(units(split.x_train))  # k-means' own assignment
    k = run.clusters["weights"].numel()
    counts = torch.zeros(k, 10).index_put_((clusters, split.y_train), torch.ones(()), accumulate=True)
    majority, z = counts.argmax(1), units(x_test)
    mask = observed.expand_as(z)
    choices = [
        (
            "the run's choice: the most probable cluster given the top half",
            run.most_probable_cluster(z, mask),
        ),
        ("the nearest centroid on the top half", run.nearest_cluster(z, mask)),
        ("the cluster of the whole image (an oracle)", run.nearest_cluster(z)),
    ]
    return [
        [f"(no completion) majority digit of {name}", float((majority[c] == y_test).float().mean()), "-"]
        for name, c in choices
    ]


def row_name(model: str, nfe: int, resample: int, particles: int) -> str:
    """The inpainting table's name of a row of INPAINT."""
    method = f"{particles} particles (SMC)" if particles > 1 else f"resample {resample}"
    return f"{model}: {nfe} score evaluations, {method} ({nfe * particles} network evaluations)"


def inpainting_table(run: Run, unconditional: Run, classifier: DigitsClassifier, quick: bool, clock: Clock):
    split = digits_split()
    x_test, y_test = (split.x_test[:40], split.y_test[:40]) if quick else (split.x_test, split.y_test)
    observed = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    observed[..., :4, :] = True  # the top half
    dequantized = bool(run.config.data.dequantize)
    x_obs = x_test + 0.5 if dequantized else x_test  # the centre of each grey level's bin
    n = x_test.shape[0]

    predicted = {}  # the digits each row's completions are classified as, for the paired test

    def accuracy(images: torch.Tensor, name: str | None = None) -> float:
        digits = classifier.predict(scale_digits(images))
        if name is not None:
            predicted[name] = digits
        return float((digits == y_test).float().mean())

    def rmse(images: torch.Tensor) -> float:
        missing = ~observed.expand_as(x_test)
        return float((images - x_test)[missing].double().pow(2).mean().sqrt())

    rows = []
    for model, nfe, resample, particles in INPAINT:
        source = unconditional if model == "digits_vp" else run
        name = row_name(model, nfe, resample, particles)
        completed = to_levels(
            clock(
                f"inpainting {n} test images ({name})",
                lambda source=source, nfe=nfe, resample=resample, particles=particles, model=model: (
                    source.inpaint(
                        x_obs, observed, nfe, resample, seed=0, particles=particles, choose=model != NULL
                    )
                ),
            ),
            dequantized,
        )
        rows.append([name, accuracy(completed, name), rmse(completed)])
        if (model, nfe, particles) == FIGURE:
            figure = completed
    knn = knn_references(x_test, observed)
    blank = torch.where(observed, x_test, torch.zeros(()))
    chosen = run.most_probable_class(run.scaler.transform(x_obs), observed.expand_as(x_obs)).cpu()
    svc = knn["top half"][HANDED]  # a reference, not a model of p(x): each row completed as the SVC's digit
    handed = to_levels(
        clock(
            f"inpainting {n} test images (each as the digit the SVC reads, w = {HANDED_GUIDANCE:g}), "
            "26 score evaluations each, 8 particles (SMC)",
            lambda: run.inpaint(
                x_obs, observed, 26, seed=0, label=svc, guidance=HANDED_GUIDANCE, particles=8
            ),
        ),
        dequantized,
    )
    rows += [
        ["nearest training image by the top half: its bottom half", accuracy(knn["nearest"]), rmse(knn["nearest"])],
        ["5 nearest training images by the top half: their bottom halves averaged",
         accuracy(knn["mean of 5"]), rmse(knn["mean of 5"])],
        [f"class-conditional run, each row completed as the digit the {HANDED} of its top half reads "
         f"(w = {HANDED_GUIDANCE:g}; 26 score evaluations, 8 particles)", accuracy(handed), rmse(handed)],
        ["bottom half left blank (0)", accuracy(blank), rmse(blank)],
        ["the originals", accuracy(x_test), 0.0],
        *[[f"(no completion) {name} of the top halves", float((p == y_test).float().mean()), "-"]
          for name, p in knn["top half"].items()],
        [f"(no completion) the class-conditional run's {CHOSEN} given the top half (its class Gaussians)",
         float((chosen == y_test).float().mean()), "-"],
        *cluster_choice_rows(unconditional, x_test, y_test, observed),
    ]  # fmt: skip
    # the figure: the first test image of each digit, completed by FIGURE; the half to fill shown dark grey
    first = torch.tensor([int((y_test == k).nonzero()[0]) for k in y_test.unique()])
    masked = torch.where(observed, x_test[first], torch.full((), 0.3 * DIGITS_LEVELS))
    image_grid(
        torch.cat([masked, figure[first], x_test[first]]),
        nrow=first.numel(),
        value_range=(0, DIGITS_LEVELS),
        scale=4,
        path=common.RESULTS / "guidance_inpainting.png",
    )
    header = [
        f"bottom halves of {n} test images",
        "classified as the true digit",
        "its 95% interval (Wilson)",
        "RMSE of the filled pixels (grey levels)",
    ]
    rows = [[name, acc, "-" if acc == "-" else interval(acc, n), err] for name, acc, err in rows]
    best = max(predicted, key=lambda name: float((predicted[name] == y_test).float().mean()))
    wrong = predicted[best] != y_test
    pairs = zip(y_test[wrong].tolist(), predicted[best][wrong].tolist(), strict=True)
    confusions = Counter(pairs).most_common(2)
    paired = {
        "completion": best,
        "images": n,
        "confusions": confusions,
        "tests": {name: paired_test(~wrong, digits == y_test) for name, digits in knn["top half"].items()},
    }
    return markdown_table(header, rows), rows, paired


def reading(guidance: list[list], inpainting: list[list], paired: dict) -> str:
    """What the tables say about the two targets, from their numbers."""
    accuracies = {row[0]: row[1] for row in guidance[: len(WEIGHTS)]}
    met = [w for w, a in accuracies.items() if a >= GUIDANCE_TARGET]
    fd = {row[0]: row[3] for row in guidance[: len(WEIGHTS)]}
    low0, high0 = bounds(guidance[0][2])
    lines = [
        f"- Guidance: classified as the digit asked for in {accuracies['0']:.1%} of samples at w = 0 "
        f"(95% interval {low0:.1%} to {high0:.1%}) and "
        f"{max(accuracies.values()):.1%} at best; the target ({GUIDANCE_TARGET:.0%}) is "
        + (f"met from w = {met[0]} on." if met else "not met.")
        + f" The price is diversity: the Fréchet distance grows from {fd['0']:.3g} (w = 0) to "
        f"{fd[f'{WEIGHTS[-1]:g}']:.3g} (w = {WEIGHTS[-1]:g}) and the within-class spread shrinks.",
    ]
    table = {row[0]: row[1] for row in inpainting}
    model = {row[0]: row[1] for row in inpainting[: len(INPAINT)]}
    best, first = paired["completion"], next(iter(model))
    same = next(entry[1:] for entry in INPAINT if entry[0] == CHOSEN)
    by_choice = row_name(CHOSEN, *same)
    choice = table[
        next(
            name for name in table if name.startswith(f"(no completion) the class-conditional run's {CHOSEN}")
        )
    ]
    nearest, handed = inpainting[len(INPAINT)][1], inpainting[len(INPAINT) + 2][1]
    verdict = "met" if model[best] >= INPAINT_TARGET else "not met"
    low, high = bounds(next(row[2] for row in inpainting if row[0] == best))
    classifiers = "; ".join(
        f"{name} {table[f'(no completion) {name} of the top halves']:.1%} (right where the completion is "
        f"wrong on {classifier_only} images, wrong where it is right on {completion_only}; exact McNemar "
        f"p = {p:.2g})"
        for name, (completion_only, classifier_only, p) in paired["tests"].items()
    )
    confusions = " and ".join(f"{n} {true}s completed as {got}s" for (true, got), n in paired["confusions"])
    lines.append(
        f"- Inpainting: completions classified as the true digit in {model[best]:.1%} of test images at "
        f"best ({best}), against {model[first]:.1%} for RePaint's resampling ({first}); the target "
        f"({INPAINT_TARGET:.0%}) is {verdict}, and lies {'inside' if low <= INPAINT_TARGET <= high else 'outside'} "
        f"the 95% interval of that accuracy on {paired['images']} images ({low:.1%} to {high:.1%}). Sequential Monte Carlo keeps the particles whose noisy "
        "state predicts the top half's noisy path, which decides the digit where the noise is high and "
        "replacement cannot; RePaint's resampling with jumps of one step corrects the class only slowly. "
        f"Without a label, the class-conditional run decides each row's digit first, the most probable under "
        f"its class Gaussians given the top half (right for {choice:.1%}), and completes the row as that digit: "
        f"{model[by_choice]:.1%} read right ({by_choice}), against {model[row_name(NULL, *same)]:.1%} from "
        "its null label with the same sampler. "
        "digits_vp is a mixture of models of 40 k-means clusters of the pixels, and fills each row from the "
        "cluster its top half most probably came from: that choice, not the sampler, sets most of its digits "
        "(the rows on the majority digit of the chosen cluster). "
        f"For scale, classifiers of the top halves alone, which need no completion: {classifiers}. The bottom "
        f"half of the nearest training image gives {nearest:.1%}. What the top half tells bounds every "
        f"completion: where a top half is shared by two digits, a completion can be right only by chance "
        f"(the commonest errors: {confusions}). Even handed the digit the {HANDED} reads, the "
        f"class-conditional run's completions read right {handed:.2%} ({round(handed * paired['images'])} of {paired['images']})."
    )
    return "\n".join(lines)


@common.one_thread
def main(quick: bool = False) -> None:
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    classifier = clock("classifier (train or load)", DigitsClassifier.pretrained)
    run = trained_run(quick, clock)
    guidance, guidance_rows = guidance_table(run, classifier, 20 if quick else 144, quick, clock)
    unconditional = load_run(
        clock("training the digits_vp preset (bench_digits' run; resumed)", lambda: digits_run(quick)[0])
    )
    inpainting, inpainting_rows, paired = inpainting_table(run, unconditional, classifier, quick, clock)
    notes = (
        f"Run: `runs/{run.run_dir.name}` ({run.config.data.name}, step {run.step}, "
        f"label_dropout {run.config.train.label_dropout}); classifier test accuracy {classifier.test_accuracy:.4f}. "
        "Figures: `bench/results/guidance_samples.png` (rows: w = 0, 0.5, 1, 2, 4; columns: digits 0-9) and "
        "`bench/results/guidance_inpainting.png` (rows: the observed top half, the completion, the original)."
    )
    notes += "\n\n" + reading(guidance_rows, inpainting_rows, paired)
    if quick:
        notes += "\n\n**Quick mode: a smoke test; these numbers mean nothing.**"
    write_results(
        "guidance",
        "Digits, conditioned: classifier-free guidance and inpainting",
        [
            ("Classifier-free guidance: accuracy against diversity", guidance),
            ("Inpainting: the bottom half of held-out digits, given the top half", inpainting),
            (
                "Time (one thread of a 2-core machine shared with other jobs)",
                markdown_table(["stage", "wall s", "CPU s"], clock.rows),
            ),
        ],
        notes,
    )
