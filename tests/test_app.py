"""The scoring page (python -m iqa_lightning.app) in a real headless Chromium driven by Selenium:
a generated PNG uploaded through the page's file input shows the score the Python API gives
for that file (to the digits shown), the score words' bar chart and the model's explanation; a
text file named .png and a file over ``app.max_bytes`` each get a message naming the file.

Needs Chromium and its driver (Debian: ``apt-get install -y chromium chromium-driver``; .ci/run
installs them) and the web extra (``pip install -e ".[web]"``); without them the test skips
and says so. ``IQA_APP_SCREENSHOT=docs/images/app.png`` also writes a screenshot of the page;
``IQA_APP_OVERRIDES`` replaces ``model=tiny_llava`` with other overrides and ``IQA_APP_PHOTOS``
names a folder of images uploaded before the test's own.
"""

import contextlib
import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

from iqa_lightning.build import CONFIG_DIR
from iqa_lightning.scorer import Scorer

INSTALL = (
    "apt-get install -y chromium chromium-driver (Debian; .ci/run installs them) and pip "
    'install -e ".[web]"'
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
MAX_BYTES = 60_000
WAIT_S = 60

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason=f"Chromium or chromedriver not found: {INSTALL}"
)


def _import_web():
    """Selenium and the app (whose server needs the web extra), or a skip saying how."""
    webdriver = pytest.importorskip("selenium.webdriver", reason=f"no selenium: {INSTALL}")
    pytest.importorskip("starlette", reason=f"no starlette: {INSTALL}")
    pytest.importorskip("uvicorn", reason=f"no uvicorn: {INSTALL}")
    from iqa_lightning import app

    return webdriver, app


def _photo(path: Path) -> Path:
    """A 96 x 72 PNG: a colour ramp with a disc and mild noise (well under MAX_BYTES)."""
    y, x = np.mgrid[0:72, 0:96]
    rgb = np.stack([x * 2.5, y * 3.0, 255 - x * 2.0], axis=-1)
    rgb[(x - 50) ** 2 + (y - 36) ** 2 < 300] = (240, 200, 40)
    rgb += np.random.default_rng(0).normal(0, 6, rgb.shape)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return path


def _large(path: Path) -> Path:
    """A real PNG of noise, over MAX_BYTES."""
    noise = np.random.default_rng(1).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    return path


class _Served:
    """The page of an app config served in a thread of this process on a free port, its config
    composed and set as ``hydra.main`` sets it (so the page names the presets, as the CLI's
    does)."""

    def __init__(self, app, overrides: list[str], output_dir: Path) -> None:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="app", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        try:
            with open_dict(cfg):
                del cfg["hydra"]
            self.sock = app.bind("127.0.0.1", 0)
            self.server = app.server(app.build_page(cfg), self.sock)
        finally:
            HydraConfig.instance().cfg = None
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        self.url = app.url_of(self.sock)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _browser(webdriver):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1000,900"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _cards(driver, count: int) -> list:
    """The result cards once ``count`` are there and every one is done."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def finished(d):
        cards = d.find_elements(By.CSS_SELECTOR, "#results .card")
        done = [c for c in cards if "done" in c.get_attribute("class").split()]
        return cards if len(cards) == count and len(done) == count else False

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(finished)


@needs_chromium
def test_page_shows_the_scorers_score_and_names_unreadable_and_oversized_files(tmp_path):
    webdriver, app = _import_web()
    from selenium.webdriver.common.by import By

    photo = _photo(tmp_path / "photo.png")
    notes = tmp_path / "notes.png"
    notes.write_text("a text file, named like an image\n")
    large = _large(tmp_path / "large.png")
    assert photo.stat().st_size < MAX_BYTES < large.stat().st_size

    chosen = shlex.split(os.environ.get("IQA_APP_OVERRIDES", "model=tiny_llava"))
    photos = os.environ.get("IQA_APP_PHOTOS")
    extra = sorted(Path(photos).iterdir()) if photos else []
    overrides = [f"app.max_bytes={MAX_BYTES}", "app.max_new_tokens=6", *chosen]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(1) as pool:
        starting = pool.submit(_browser, webdriver)  # Chromium starts while the model is built
        stack.callback(lambda: starting.result().quit())
        served = _Served(app, overrides, tmp_path)
        stack.callback(served.close)
        driver = starting.result()
        driver.get(served.url)
        title = driver.find_element(By.ID, "title").text
        assert title.startswith("Scored with model ") or title.startswith("Scored with run ")
        upload = driver.find_element(By.ID, "files")
        files = [*extra, photo, notes, large]
        upload.send_keys("\n".join(str(f) for f in files))
        cards = _cards(driver, len(files))
        if os.environ.get("IQA_APP_SCREENSHOT"):
            height = driver.execute_script(
                "return document.documentElement.scrollHeight + outerHeight - innerHeight"
            )
            driver.set_window_size(1000, height)
            time.sleep(0.2)  # the resized page drawn
            driver.save_screenshot(os.environ["IQA_APP_SCREENSHOT"])
        good, bad, big = cards[len(extra) :]

        runs = [o.split("=", 1)[1] for o in chosen if o.startswith("run=")]
        reference = (
            Scorer.from_run(runs[0], accelerator="cpu")
            if runs
            else Scorer.from_config(
                overrides=[o for o in chosen if not o.startswith("app.")], accelerator="cpu"
            )  # fmt: skip
        )
        expected = float(reference(photo)[0])
        shown = good.find_element(By.CLASS_NAME, "score").text
        assert shown == f"{expected:.4f}", "the page shows the Python API's score"
        assert good.find_element(By.CLASS_NAME, "name").text == "photo.png"
        bars = good.find_elements(By.CLASS_NAME, "bar")
        head = reference.module.score  # the score words and their weights
        assert [b.find_element(By.CLASS_NAME, "word").text for b in bars] == head.words
        percents = [float(b.find_element(By.CLASS_NAME, "p").text.rstrip("%")) for b in bars]
        assert sum(percents) == pytest.approx(100, abs=0.5)
        weighted = sum(p / 100 * w for p, w in zip(percents, head.weights.tolist(), strict=True))
        assert weighted == pytest.approx(expected, abs=0.003), "the bars are the score's words"
        styles = [b.find_element(By.CLASS_NAME, "fill").get_attribute("style") for b in bars]
        widths = [float(re.search(r"width: ([\d.]+)%", s).group(1)) for s in styles]
        assert widths == pytest.approx(percents, abs=0.01), "each bar as long as its figure"
        assert good.find_elements(By.CLASS_NAME, "explanation"), "an LMM explains its score"
        assert not good.find_elements(By.CLASS_NAME, "error")

        message = bad.find_element(By.CLASS_NAME, "error").text
        assert message.startswith("notes.png: not a readable image (")
        assert "cannot identify image file 'notes.png'" in message, "no server path shown"
        assert not bad.find_elements(By.CLASS_NAME, "score")
        message = big.find_element(By.CLASS_NAME, "error").text
        size = f"{large.stat().st_size / 1000:.1f} kB"
        limit = "the upload limit of 60.0 kB (app.max_bytes)"
        assert message == f"large.png: {size} is over {limit}"
        assert "Traceback" not in driver.page_source


# slow: a fresh process spends ~10-20 s on imports; the default test serves the same page in
# this process.
@pytest.mark.slow
def test_the_command_serves_on_a_free_port_refuses_a_taken_one_and_stops_on_ctrl_c(
    run_env, tmp_path
):
    """``python -m iqa_lightning.app model=tiny_llava app.port=0`` prints its address, answers
    the scoring CLI's score for an image (JSON), refuses a port in use with one line, and
    Ctrl+C ends it with exit code 0."""
    pytest.importorskip("uvicorn", reason=f"no uvicorn: {INSTALL}")
    photo = _photo(tmp_path / "photo.png")
    entry = [sys.executable, "-m", "iqa_lightning.app", "model=tiny_llava"]
    proc = subprocess.Popen([*entry, "app.port=0"], env=run_env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    killer = threading.Timer(300, proc.kill)
    killer.start()
    try:
        lines = iter(proc.stdout.readline, "")
        started = next((line for line in lines if line.startswith("scoring page")), "")
        found = re.search(r"\(model tiny_llava, score good_fine_vs_poor_bad\) at (\S+)", started)
        assert found, f"no address line: {started!r}\n{proc.stderr.read() if proc.poll() else ''}"
        url = found.group(1)
        port = url.rsplit(":", 1)[1]
        request = urllib.request.Request(
            f"{url}/api/score?name=photo.png", data=photo.read_bytes(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            scored = json.loads(answer.read())
        out = tmp_path / "scores.csv"
        cli = subprocess.run(
            [sys.executable, "-m", "iqa_lightning.score", f"images={photo}", "model=tiny_llava",
             f"out={out}"], env=run_env, cwd=tmp_path, capture_output=True, text=True,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        with open(out, newline="") as f:
            expected = float(next(csv.DictReader(f))["score"])
        assert scored["name"] == "photo.png" and scored["shown"] == f"{expected:.4f}"
        assert scored["score"] == pytest.approx(expected, abs=1e-6)

        taken = subprocess.run([*entry, f"app.port={port}"], env=run_env, cwd=tmp_path,
                               capture_output=True, text=True)  # fmt: skip
        assert taken.returncode == 1
        last = taken.stderr.strip().splitlines()[-1]
        assert last == (
            f"error: app.host=127.0.0.1 app.port={port}: cannot listen there (Address already "
            "in use); choose another app.port (0: any free one)"
        )
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "scoring page stopped" in rest
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
