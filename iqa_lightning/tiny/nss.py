"""A classical reference on the learning set: natural scene statistics and a small regressor.

    python -m iqa_lightning.tiny.nss                          # the benchmark's set, seeds 0 1 2
    python -m iqa_lightning.tiny.nss --train-images 1920      # four times the training images

Beside their learned models, IQA papers report a no-reference scorer built on natural scene
statistics (BRISQUE, Mittal et al., IEEE TIP 2012): the grey image's mean-subtracted,
contrast-normalised (MSCN) coefficients and the products of neighbouring ones follow
(asymmetric) generalised Gaussian laws whose shapes and spreads distortions change. This module
computes those 36 figures at two scales, adds what they cannot see by design (they are
normalised for brightness and colour: exposure, clipping, saturation) and the block structure
of JPEG and pixelation (:data:`FEATURE_NAMES`), and fits a small MLP on the learning set's
training split, chosen on its validation split as the methods' checkpoints are, read on its test
split (held-out photographs at held-out strengths). With the same training images the methods
get, it says how far the pixels' own statistics carry on this set: a yardstick for the learning
benchmark (``tests/benchmarks/bench_learning.py`` prints it under its table).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.special import gamma

__all__ = [
    "FEATURE_NAMES",
    "NSSReport",
    "Regressor",
    "fit_regressor",
    "nss_features",
    "nss_report",
]

_PAIRS = ("horizontal", "vertical", "diagonal", "antidiagonal")
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _names() -> tuple[str, ...]:
    names = []
    for scale in (1, 2):
        names += [f"mscn_shape_s{scale}", f"mscn_variance_s{scale}"]
        for pair in _PAIRS:
            names += [f"{pair}_{figure}_s{scale}" for figure in ("shape", "mean", "left", "right")]
    names += ["grey_mean", "grey_std", "clipped_bright", "clipped_dark"]
    names += [f"grey_p{p}" for p in (5, 25, 50, 75, 95)]
    names += ["saturation_mean", "saturation_std"]
    names += ["block_step_x", "block_step_y", "flat_x", "flat_y"]
    return tuple(names)


#: What :func:`nss_features` returns, in order: per scale (the image, then half its side), the
#: MSCN coefficients' generalised Gaussian shape and variance, and for the products with each of
#: the four neighbours the asymmetric law's shape, mean and left / right variances (BRISQUE's 36);
#: then the grey level's mean, spread, share of clipped bright and dark pixels and percentiles,
#: the colour saturation's mean and spread, and the log ratio of the steps across 8 px block
#: borders to those inside (x, y) and the share of flat neighbour steps (x, y).
FEATURE_NAMES = _names()

_SHAPES = np.arange(0.2, 10.0, 0.001)
#: E[x^2] / E[|x|]^2 of a generalised Gaussian of each shape (moment matching).
_GGD_RATIO = gamma(1 / _SHAPES) * gamma(3 / _SHAPES) / gamma(2 / _SHAPES) ** 2
_EPS = 1e-10


def _ggd(x: np.ndarray) -> list[float]:
    """Shape and variance of a zero-mean generalised Gaussian fitted by moment matching."""
    variance = float(np.mean(x * x))
    ratio = variance / (float(np.mean(np.abs(x))) ** 2 + _EPS)
    return [float(_SHAPES[np.argmin((_GGD_RATIO - ratio) ** 2)]), variance]


def _aggd(x: np.ndarray) -> list[float]:
    """Shape, mean, left and right variance of an asymmetric generalised Gaussian (moment
    matching, as BRISQUE fits the products of neighbouring MSCN coefficients)."""
    left, right = x[x < 0], x[x >= 0]
    left_var = float(np.mean(left * left)) if left.size else 0.0
    right_var = float(np.mean(right * right)) if right.size else 0.0
    left_sd, right_sd = np.sqrt(left_var) + _EPS, np.sqrt(right_var) + _EPS
    skew = left_sd / right_sd
    r = float(np.mean(np.abs(x))) ** 2 / (float(np.mean(x * x)) + _EPS)
    r_norm = r * (skew**3 + 1) * (skew + 1) / (skew**2 + 1) ** 2
    shape = float(_SHAPES[np.argmin((1 / _GGD_RATIO - r_norm) ** 2)])
    scale = np.sqrt(gamma(1 / shape) / gamma(3 / shape))
    mean = (right_sd - left_sd) * scale * gamma(2 / shape) / gamma(1 / shape)
    return [shape, float(mean), left_var, right_var]


def _mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients (Gaussian window, sigma 7/6)."""
    mu = ndimage.gaussian_filter(grey, 7 / 6, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.gaussian_filter(grey * grey, 7 / 6, mode="nearest") - mu * mu))
    return (grey - mu) / (sigma + 1 / 255)


def nss_features(image: np.ndarray) -> np.ndarray:
    """The :data:`FEATURE_NAMES` figures of one ``uint8 [H, W, 3]`` RGB image, ``float32``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"nss_features takes uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"nss_features needs at least 16 x 16 pixels, got {image.shape[:2]}")
    rgb = image.astype(np.float64) / 255.0
    grey = rgb.mean(axis=2)
    out: list[float] = []
    level = grey
    for _ in range(2):
        coefficients = _mscn(level)
        out += _ggd(coefficients)
        for shift in _SHIFTS:
            product = coefficients * np.roll(coefficients, shift, axis=(0, 1))
            out += _aggd(product[1:-1, 1:-1])  # rolled rows and columns wrap around
        level = ndimage.zoom(ndimage.gaussian_filter(level, 0.5), 0.5, order=1)
    out += [grey.mean(), grey.std(), (rgb > 0.98).mean(), (rgb < 0.02).mean()]
    out += list(np.percentile(grey, (5, 25, 50, 75, 95)))
    brightest, darkest = rgb.max(axis=2), rgb.min(axis=2)
    saturation = (brightest - darkest) / (brightest + 1e-3)
    out += [saturation.mean(), saturation.std()]
    for axis in (1, 0):
        steps = np.abs(np.diff(grey, axis=axis))
        border = np.take(steps, np.arange(7, steps.shape[axis], 8), axis=axis).mean()
        inside = np.delete(steps, np.s_[7::8], axis=axis).mean()
        out.append(np.log((border + 1e-4) / (inside + 1e-4)))
    out += [(np.abs(np.diff(grey, axis=axis)) < 1e-3).mean() for axis in (1, 0)]
    return np.asarray(out, dtype=np.float32)


@dataclass
class Regressor:
    """A fitted regressor: features are standardised with the training split's ``mean`` and
    ``std``, then go through ``net``."""

    net: torch.nn.Module
    mean: np.ndarray
    std: np.ndarray

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Scores of ``[N, features]``."""
        self.net.eval()
        with torch.no_grad():
            inputs = torch.tensor((features - self.mean) / self.std, dtype=torch.float32)
            return self.net(inputs).squeeze(-1).numpy()

    @property
    def parameters(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.net.parameters())


def fit_regressor(
    features: np.ndarray,
    scores: np.ndarray,
    val_features: np.ndarray,
    val_scores: np.ndarray,
    seed: int = 0,
    epochs: int = 200,
    batch_size: int = 64,
    hidden: int = 128,
) -> Regressor:
    """A two-hidden-layer MLP from standardised features to scores (AdamW, lr 1e-3, weight
    decay 1e-2), the epoch with the best validation (SRCC + PLCC) / 2 kept, as the methods'
    checkpoints are chosen."""
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: the regressor needs at least one epoch")
    if len(features) < 2 or len(val_features) < 2:
        raise ValueError(
            f"the regressor needs at least 2 training and 2 validation images, got "
            f"{len(features)} and {len(val_features)}"
        )
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = torch.tensor((features - mean) / std, dtype=torch.float32)
    y = torch.tensor(scores, dtype=torch.float32)
    val_x = torch.tensor((val_features - mean) / std, dtype=torch.float32)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(),
        torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
        torch.nn.Linear(hidden, 1),
    )  # fmt: skip
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    order = torch.Generator().manual_seed(seed)
    best, best_state = -np.inf, None
    for _ in range(epochs):
        net.train()
        for index in torch.randperm(len(x), generator=order).split(batch_size):
            loss = torch.nn.functional.mse_loss(net(x[index]).squeeze(-1), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            figures = _correlations(net(val_x).squeeze(-1).numpy(), val_scores)
        score = (figures["srcc"] + figures["plcc"]) / 2
        if score > best:  # NaN (constant predictions) never wins
            best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    return Regressor(net.eval(), mean, std)


def _correlations(predictions: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from iqa_lightning.bootstrap import bootstrap_intervals

    return bootstrap_intervals(predictions, scores, n=0)  # srcc and plcc, no resampling


@dataclass
class NSSReport:
    """The reference's figures per seed.

    Attributes:
        runs: One dict per seed: ``seed``, ``val_srcc``, ``val_plcc``, ``test_srcc``,
            ``test_plcc``.
        images: Images per split (``train``, ``val``, ``test``).
        parameters: Trainable parameters of the regressor.
        test_scores: Per seed, each test image's predicted score (``image_id -> score``).
        test_mos: Each test image's MOS (``image_id -> mos``).
    """

    runs: list[dict[str, float]]
    images: dict[str, int]
    parameters: int
    test_scores: list[dict[str, float]]
    test_mos: dict[str, float]

    def summary(self, key: str) -> tuple[float, float]:
        """Mean and population std over seeds of ``key`` (``test_srcc`` ...)."""
        values = [run[key] for run in self.runs]
        return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0

    def line(self) -> str:
        """``nss reference (<n> training images): test srcc <m> ± <s> plcc <m> ± <s>``."""
        srcc, plcc = self.summary("test_srcc"), self.summary("test_plcc")
        return (
            f"nss reference ({self.images['train']} training images, {self.parameters} "
            f"parameters): test srcc {srcc[0]:.3f} ± {srcc[1]:.3f} plcc {plcc[0]:.3f} ± "
            f"{plcc[1]:.3f}"
        )


def _split_features(datamodule, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from iqa_lightning.data.images import load_rgb

    records = datamodule.records(split)
    if not records:
        raise ValueError(f"the {datamodule.name} set has no {split!r} images")
    rows = []
    for record in records:
        try:
            rows.append(nss_features(np.asarray(load_rgb(record.path))))
        except ValueError as err:  # too small for the two scales
            raise ValueError(f"{record.path}: {err}") from err
    ids = [r.image_id for r in records]
    return np.stack(rows), np.array([float(r.mos_raw) for r in records]), ids


def nss_report(datamodule, seeds: Sequence[int] = (0, 1, 2), epochs: int = 200) -> NSSReport:
    """Fit the regressor on a data module's training split, choose it on validation, read it on
    test, once per seed (the features are computed once)."""
    datamodule.prepare_data()
    datamodule.setup()
    data = {split: _split_features(datamodule, split) for split in ("train", "val", "test")}
    runs, parameters, test_scores = [], 0, []
    (x, y, _), (val_x, val_y, _) = data["train"], data["val"]
    test_x, test_y, test_ids = data["test"]
    for seed in seeds:
        predict = fit_regressor(x, y, val_x, val_y, seed=seed, epochs=epochs)
        scores = predict(test_x)
        run: dict[str, float] = {"seed": seed}
        for split, figures in (
            ("val", _correlations(predict(val_x), val_y)),
            ("test", _correlations(scores, test_y)),
        ):
            run.update({f"{split}_{k}": v for k, v in figures.items()})
        runs.append(run)
        test_scores.append(dict(zip(test_ids, map(float, scores), strict=True)))
        parameters = predict.parameters
    images = {split: len(values[1]) for split, values in data.items()}
    test_mos = dict(zip(test_ids, map(float, test_y), strict=True))
    return NSSReport(runs, images, parameters, test_scores, test_mos)


def main(argv: Sequence[str] | None = None) -> NSSReport:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=480)
    parser.add_argument("--val-images", type=int, default=96)
    parser.add_argument("--test-images", type=int, default=192)
    parser.add_argument("--root", default=None, help="the set's folder (default: under .cache)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200, help="regressor epochs")
    args = parser.parse_args(argv)

    from iqa_lightning.data.datasets.learning import LearningDataModule

    datamodule = LearningDataModule(
        root=args.root,
        train_images=args.train_images,
        val_images=args.val_images,
        test_images=args.test_images,
    )
    report = nss_report(datamodule, args.seeds, args.epochs)
    for run in report.runs:
        print(
            f"seed {run['seed']}: val srcc {run['val_srcc']:.3f} plcc {run['val_plcc']:.3f}, "
            f"test srcc {run['test_srcc']:.3f} plcc {run['test_plcc']:.3f}"
        )
    print(report.line())
    return report


if __name__ == "__main__":
    main()
