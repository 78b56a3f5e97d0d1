"""The classical reference on the learning set: natural scene statistics and a small MLP."""

import numpy as np
import pytest

from iqa_lightning.tiny.nss import FEATURE_NAMES, fit_regressor, main, nss_features
from iqa_lightning.tiny.world import Scene, render


def _figures(source: str, distortions=(), side: int = 64) -> dict[str, float]:
    image = np.asarray(render(Scene(source, None, False, tuple(distortions), seed=3), side))
    return dict(zip(FEATURE_NAMES, nss_features(image), strict=True))


def test_features_are_named_and_finite_even_for_a_flat_image():
    rng = np.random.default_rng(0)
    images = [
        np.asarray(render(Scene("astronaut", None, False, (), seed=0), 64)),
        np.full((32, 48, 3), 128, np.uint8),  # no structure at all, and not square
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
    ]
    for image in images:
        features = nss_features(image)
        assert features.shape == (len(FEATURE_NAMES),) and features.dtype == np.float32
        assert np.isfinite(features).all()
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 51


#: kind -> the figure it must move and which way (checked on a colour and a grey photograph).
MOVES = {
    "noise": ("mscn_variance_s1", 1),  # the normalised coefficients spread
    "blur": ("mscn_variance_s1", -1),  # and shrink
    "pixelation": ("flat_x", 1),  # copies of one pixel side by side
    "jpeg": ("block_step_x", 1),  # steps across the 8 px block borders
    "contrast": ("grey_std", -1),
    "underexposure": ("grey_p50", -1),
    "overexposure": ("clipped_bright", 1),
    "saturation": ("saturation_mean", 1),
}


@pytest.mark.parametrize(
    "kind, source",
    [(k, s) for k in MOVES for s in ("coffee", "astronaut" if k == "saturation" else "camera")],
)
def test_each_distortion_moves_its_figure(kind, source):
    """As the world renders them (64 px): the distortion at strength 0.6 against the clean crop."""
    feature, sign = MOVES[kind]
    clean = _figures(source)[feature]
    distorted = _figures(source, [(kind, 0.6)])[feature]
    assert sign * (distorted - clean) > 0.1, (kind, source, clean, distorted)


def test_bad_images_are_refused_by_name():
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\] RGB, got uint8 \(64, 64\)"):
        nss_features(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="got float32"):
        nss_features(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"at least 16 x 16 pixels, got \(8, 64\)"):
        nss_features(np.zeros((8, 64, 3), np.uint8))


def test_regressor_learns_and_keeps_its_best_validation_epoch():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = np.tanh(x[:, 0]) - 0.5 * x[:, 1] ** 2 + 0.1 * rng.normal(size=300)
    regressor = fit_regressor(x[:200], y[:200], x[200:250], y[200:250], seed=0, epochs=30)
    assert spearmanr(regressor(x[250:]), y[250:])[0] > 0.8
    assert regressor.parameters == 6 * 128 + 128 + 128 * 128 + 128 + 128 + 1
    with pytest.raises(ValueError, match="at least 2 training and 2 validation images, got 1"):
        fit_regressor(x[:1], y[:1], x[:5], y[:5])
    with pytest.raises(ValueError, match="epochs=0: the regressor needs at least one epoch"):
        fit_regressor(x[:5], y[:5], x[:5], y[:5], epochs=0)


def test_a_too_small_image_of_a_set_is_named(tmp_path):
    from PIL import Image

    from iqa_lightning.tiny.nss import nss_report

    class Records:  # the two calls nss_report makes of a data module, on one tiny file
        name = "tiny"

        def prepare_data(self):
            pass

        def setup(self):
            pass

        def records(self, split):
            from iqa_lightning.data.records import ImageRecord

            return [ImageRecord("a.png", tmp_path / "a.png", 3.0)]

    Image.new("RGB", (12, 40), "grey").save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: nss_features needs at least 16 x 16 pixels"):
        nss_report(Records(), seeds=[0])


def test_report_on_a_small_learning_set(tmp_path, capsys):
    """End to end on a generated learning set: one line per seed, then the reference's line;
    fitted on 96 seen-photograph images it ranks the held-out photographs far above chance."""
    report = main(
        ["--train-images", "96", "--val-images", "16", "--test-images", "48",
         "--root", str(tmp_path / "set"), "--seeds", "0", "1", "--epochs", "60"]
    )  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("seed 0: val srcc") and printed[1].startswith("seed 1:")
    assert printed[-1].startswith("nss reference (96 training images, 23297 parameters): test srcc")
    assert report.images == {"train": 96, "val": 16, "test": 48}
    assert [run["seed"] for run in report.runs] == [0, 1]
    assert len(report.test_scores) == 2 and len(report.test_mos) == 48
    assert set(report.test_scores[0]) == set(report.test_mos)
    assert report.summary("test_srcc")[0] > 0.4, report.runs
