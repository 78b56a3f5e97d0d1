"""The scoring page: drop images in a browser, see each score.

    python -m iqa_lightning.app model=tiny_llava_trained score=qalign      # zero-shot
    python -m iqa_lightning.app run=outputs/runs/<run> app.port=8080       # a finished run
    python -m iqa_lightning.app model=one_align app.host=0.0.0.0           # every interface

``model=``, ``score=``, ``prompt=``, ``run=``, ``scorer=``, ``resize=`` and ``trainer=`` mean
what they mean for ``python -m iqa_lightning.score`` (``conf/app.yaml`` extends
``conf/scoring.yaml``), and the scores are that command's: the model is built once, at
start-up, by the same code, and each image goes through the same scoring loop
(:class:`~iqa_lightning.scorer.Scorer`). The page shows, per image, its score (``app.decimals``
digits), the score words' probabilities as a bar chart (for a scorer that reads quality words)
and, for a model that writes text, its greedy answer to ``app.question`` (``app.explain=false``
leaves it out). An upload over ``app.max_bytes``, a file that is no image and a corrupt image
each get a message naming the file on the page. One image is scored at a time, in upload order.

The server is Starlette run by uvicorn (the ``web`` extra: ``pip install -e ".[web]"``). The
port is bound before the model loads, so a port in use fails at once; ``app.port=0`` takes a
free one (the line printed at start-up names it).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from iqa_lightning import hydra_entry
from iqa_lightning.cli import error_line
from iqa_lightning.data import ImageLoadError, load_rgb
from iqa_lightning.errors import ConfigError
from iqa_lightning.hub import preset_choice
from iqa_lightning.models.scorer import ScoreOutput
from iqa_lightning.score import build_scorer
from iqa_lightning.scorer import Scorer

log = logging.getLogger("iqa_lightning.app")

WEB_EXTRA = 'the page needs the web extra: pip install -e ".[web]" (starlette, uvicorn)'
#: The key of the one image a scoring call holds (calls take turns).
_KEY = "upload"


class UploadError(ValueError):
    """An upload the page cannot score; the message names the file.

    Args:
        message: What is wrong, starting with the file's name.
        status: The HTTP status of the answer.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def human_size(size: int) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as file browsers show them)."""
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def too_large(name: str, size: int | None, limit: int) -> UploadError:
    """The message of an upload over ``app.max_bytes`` (``size`` None: it has no declared
    length and its body ran past the limit)."""
    what = f"more than {human_size(limit)}" if size is None else human_size(size)
    return UploadError(
        f"{name}: {what} is over the upload limit of {human_size(limit)} (app.max_bytes)", 413
    )


class PageModel(nn.Module):
    """The module as the page scores with it: the scoring loop's scores, and for each image the
    score words' probabilities (where the scorer has them) and an explanation (where the model
    writes text and ``explain``), kept in :attr:`details` under the image's name.

    Args:
        module: The module the scoring CLI builds (a rebuilt run or a zero-shot model).
        explain: Ask a model that writes text to explain each image.
        question: The question it answers.
        max_new_tokens: Length limit of the explanation.
    """

    def __init__(
        self, module: nn.Module, explain: bool, question: str, max_new_tokens: int
    ) -> None:
        super().__init__()
        self.module = module
        head = module.scorer.word_head  # a scorer that reads words gives their probabilities
        self.words = list(head.words) if head is not None else None
        self.explains = bool(explain) and "instruct" in module.scorer.tasks
        self.question = str(question)
        self.max_new_tokens = int(max_new_tokens)
        self.details: dict[str, dict[str, Any]] = {}

    @property
    def backbone(self) -> nn.Module:
        """The module's backbone (what a sharding strategy looks for)."""
        return self.module.backbone

    def score_output(self, batch: dict[str, Any]) -> ScoreOutput:
        """The scorer's output as the scoring loop reads it; the details of each image on the
        side."""
        output = self.module.score_output(batch)  # scores and word probabilities, one pass
        probs = output.probs
        pixels, names = batch["pixels"], list(batch["image"])
        answers = (
            self.module.explain(pixels, [self.question] * len(names), self.max_new_tokens)
            if self.explains
            else None
        )
        for i, name in enumerate(names):
            self.details[name] = {
                "probs": None if probs is None else probs[i].float().tolist(),
                "explanation": None if answers is None else answers[i],
            }
        return output


@dataclass
class Settings:
    """The page's options (``app`` in ``conf/app.yaml``)."""

    title: str
    max_bytes: int
    decimals: int = 4

    def __post_init__(self) -> None:
        if int(self.max_bytes) < 1:
            raise ConfigError(f"app.max_bytes={self.max_bytes} must be a positive integer")
        if not 0 <= int(self.decimals) <= 10:
            raise ConfigError(f"app.decimals={self.decimals} must be between 0 and 10")


class Page:
    """Scores uploaded files for the page, one at a time, with a scorer built once.

    Args:
        scorer: The scoring CLI's scorer (:func:`iqa_lightning.score.build_scorer`).
        settings: What the page shows and accepts.
        explain, question, max_new_tokens: See :class:`PageModel`.
    """

    def __init__(
        self,
        scorer: Scorer,
        settings: Settings,
        explain: bool = True,
        question: str = "Describe the quality of this image in detail.",
        max_new_tokens: int = 48,
    ) -> None:
        self.settings = settings
        self.model = PageModel(scorer.module, explain, question, max_new_tokens)
        self.scorer = Scorer(
            self.model, scorer.image_size, batch_size=1, num_workers=0, resize=scorer.resize,
            trainer=scorer.trainer,
        )  # fmt: skip
        self._turn = threading.Lock()

    def info(self) -> dict[str, Any]:
        """What the page's script needs to know."""
        return {
            "title": self.settings.title,
            "max_bytes": int(self.settings.max_bytes),
            "max_size": human_size(int(self.settings.max_bytes)),
            "words": self.model.words,
            "explains": self.model.explains,
        }

    def score_file(self, name: str, data: bytes) -> dict[str, Any]:
        """The page's answer for one uploaded file.

        Raises:
            UploadError: The file is over ``max_bytes`` or is no readable image; the message
                names it.
        """
        if len(data) > self.settings.max_bytes:
            raise too_large(name, len(data), self.settings.max_bytes)
        with tempfile.TemporaryDirectory(prefix="iqa-app-") as folder:
            path = Path(folder) / ("upload" + Path(name).suffix[:16])
            path.write_bytes(data)
            try:
                image = load_rgb(path)
            except ImageLoadError as err:
                reason = (err.reason or str(err)).replace(str(path), name)
                raise UploadError(f"{name}: not a readable image ({reason})", 415) from None
        with self._turn:
            result = self.scorer.score([image], names=[_KEY])
            details = self.model.details.pop(_KEY)
        score = float(result.scores[0])
        words = self.model.words
        return {
            "name": name,
            "score": score,
            "shown": f"{score:.{int(self.settings.decimals)}f}",
            "size": f"{image.width} x {image.height}",
            "words": None if words is None else [
                {"word": w, "p": p} for w, p in zip(words, details["probs"], strict=True)
            ],
            "explanation": details["explanation"],
        }  # fmt: skip


def page_title(cfg: DictConfig) -> str:
    """What the page says it scores with: the run, or the model and score head presets."""
    if cfg.get("run"):
        return f"run {Path(str(cfg.run)).name}"
    if cfg.get("scorer") is not None:
        return f"scorer {preset_choice('scorer') or 'folder'} {cfg.scorer.get('pretrained')}"
    model = (
        preset_choice("model")
        or OmegaConf.select(cfg, "model.pretrained")
        or str(OmegaConf.select(cfg, "model._target_", default="")).rsplit(".", 1)[-1]
    )
    head = OmegaConf.select(cfg, "score.name") or preset_choice("score")
    return f"model {model}" + (f", score {head}" if head else "")


def build_page(cfg: DictConfig) -> Page:
    """The :class:`Page` of an app config: its model built as ``python -m iqa_lightning.score``
    builds it."""
    app = cfg.app
    settings = Settings(page_title(cfg), int(app.max_bytes), int(app.decimals))  # checked first
    return Page(build_scorer(cfg), settings, bool(app.explain), app.question, app.max_new_tokens)


def create_app(page: Page):
    """The Starlette application: ``GET /`` the page, ``GET /api/info`` its settings,
    ``POST /api/score?name=<file name>`` with the file as the body: the score as JSON
    (``{"name", "score", "shown", "words", "explanation"}``, or ``{"name", "error"}``)."""
    # Optional dependency (the web extra): only the page needs Starlette.
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    limit = int(page.settings.max_bytes)
    html = PAGE_HTML.replace("__INFO__", json.dumps(page.info()).replace("</", "<\\/"))

    async def index(request):
        return HTMLResponse(html)

    async def info(request):
        return JSONResponse(page.info())

    async def score(request):
        name = Path(request.query_params.get("name") or "upload").name[:200] or "upload"
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise too_large(name, int(declared), limit)
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large(name, None, limit)
            answer = await run_in_threadpool(page.score_file, name, bytes(body))
        except UploadError as err:
            return JSONResponse({"name": name, "error": str(err)}, status_code=err.status)
        return JSONResponse(answer)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/info", info),
            Route("/api/score", score, methods=["POST"]),
        ]
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port`` 0: a free one).

    Raises:
        ConfigError: The address cannot be bound (in use, not this machine's), naming it.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise ConfigError(f"app.host={host}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"app.host={host} app.port={port}: cannot listen there "
            f"({err.strerror or err}); choose another app.port (0: any free one)"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a listening socket."""
    host, port = sock.getsockname()[:2]
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def server(page: Page, sock: socket.socket):
    """A uvicorn server of the page on a bound socket (``server.run(sockets=[sock])`` serves
    until ``server.should_exit`` is set)."""
    # Optional dependency (the web extra): only the page needs uvicorn.
    import uvicorn

    config = uvicorn.Config(create_app(page), log_level="warning", lifespan="off")
    return uvicorn.Server(config)


def check_web_extra() -> None:
    """Raises ConfigError with the install line when Starlette or uvicorn is missing."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{WEB_EXTRA}; missing: {', '.join(missing)}")


def serve(cfg: DictConfig) -> None:
    """Bind ``app.host:app.port``, build the model, and serve the page until interrupted."""
    check_web_extra()
    sock = bind(str(cfg.app.host), int(cfg.app.port))
    try:
        page = build_page(cfg)
        print(f"scoring page ({page.settings.title}) at {url_of(sock)}  (Ctrl+C stops)",
              flush=True)  # fmt: skip
        server(page, sock).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then passed Ctrl+C on
        print("scoring page stopped", flush=True)
    finally:
        sock.close()


_hydra_main = hydra_entry.driver("app")(serve)


def main() -> None:
    """Entry point of ``python -m iqa_lightning.app``."""
    try:
        check_web_extra()
    except ConfigError as err:  # before Hydra and the model load
        print(error_line(err), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    with hydra_entry.reported():
        _hydra_main()


PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>iqa-lightning: score images</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 14px 24px; }
  header h1 { font-size: 18px; margin: 0; }
  header p { margin: 2px 0 0; color: #b9c2d3; font-size: 13px; }
  main { max-width: 980px; margin: 0 auto; padding: 20px 24px; }
  #drop { display: block; border: 2px dashed #8a94a8; border-radius: 10px; background: #fff;
          padding: 26px; text-align: center; cursor: pointer; }
  #drop.over { border-color: #2f6fed; background: #eef3ff; }
  #drop small { color: #5c667a; }
  #files { margin-top: 10px; }
  #results { display: grid; gap: 14px; margin-top: 18px; }
  .card { display: grid; grid-template-columns: 150px 1fr; gap: 16px; background: #fff;
          border-radius: 10px; padding: 14px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  .card img { width: 150px; height: 150px; object-fit: cover; border-radius: 6px;
              background: #dde1e8; }
  .name { font-weight: 600; word-break: break-all; }
  .meta { color: #5c667a; font-size: 13px; }
  .score { font-size: 30px; font-weight: 700; color: #2f6fed; }
  .bars { margin-top: 6px; max-width: 520px; }
  .bar { display: grid; grid-template-columns: 90px 1fr 56px; gap: 8px; align-items: center;
         font-size: 13px; margin: 3px 0; }
  .track { background: #e6e9ef; border-radius: 4px; height: 14px; overflow: hidden; }
  .fill { background: #2f6fed; height: 100%; }
  .p { text-align: right; font-variant-numeric: tabular-nums; }
  .explanation { margin: 8px 0 0; font-style: italic; color: #333c4d; }
  .error { color: #b3261e; font-weight: 600; margin: 6px 0 0; }
  .card.failed { grid-template-columns: 1fr; border-left: 4px solid #b3261e; }
  .card.failed img { display: none; }
</style>
</head>
<body>
<header>
  <h1>Image quality</h1>
  <p id="title"></p>
</header>
<main>
  <label id="drop">
    <strong>Drop images here</strong> or choose files<br>
    <small id="limit"></small><br>
    <input id="files" type="file" accept="image/*" multiple>
  </label>
  <div id="results"></div>
</main>
<script>
const INFO = __INFO__;
document.getElementById("title").textContent = "Scored with " + INFO.title;
document.getElementById("limit").textContent =
  "Images up to " + INFO.max_size + " each; higher scores are better.";
const results = document.getElementById("results");
const drop = document.getElementById("drop");
const input = document.getElementById("files");
let queue = Promise.resolve();

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addCard(file) {
  const card = el("div", "card pending");
  card.dataset.name = file.name;
  const img = el("img");
  img.alt = file.name;
  const body = el("div");
  body.append(el("div", "name", file.name), el("div", "meta status", "scoring..."));
  card.append(img, body);
  results.append(card);
  return {card, img, body};
}

function show(view, file, answer) {
  const {card, img, body} = view;
  body.querySelector(".status").remove();
  if (answer.error) {
    card.classList.add("failed");
    body.append(el("p", "error", answer.error));
    return;
  }
  img.src = URL.createObjectURL(file);
  body.append(el("div", "meta", answer.size + " pixels"), el("div", "score", answer.shown));
  if (answer.words) {
    const bars = el("div", "bars");
    for (const {word, p} of answer.words) {
      const row = el("div", "bar");
      const track = el("span", "track");
      const fill = el("span", "fill");
      fill.style.display = "block";
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.append(fill);
      row.append(el("span", "word", word), track, el("span", "p", (100 * p).toFixed(1) + "%"));
      bars.append(row);
    }
    body.append(bars);
  }
  if (answer.explanation !== null && answer.explanation !== undefined) {
    body.append(el("p", "explanation", answer.explanation || "(no text)"));
  }
}

async function scoreOne(file, view) {
  let answer;
  try {
    const response = await fetch("/api/score?name=" + encodeURIComponent(file.name), {
      method: "POST", body: file,
      headers: {"Content-Type": file.type || "application/octet-stream"},
    });
    const text = await response.text();
    try { answer = JSON.parse(text); }
    catch (e) { answer = {error: file.name + ": the server answered " + response.status}; }
  } catch (e) {
    answer = {error: file.name + ": no answer from the server (" + e + ")"};
  }
  show(view, file, answer);
  view.card.classList.remove("pending");
  view.card.classList.add("done");
}

function add(files) {
  for (const file of files) {
    const view = addCard(file);
    queue = queue.then(() => scoreOne(file, view));
  }
}

input.addEventListener("change", () => { add(Array.from(input.files)); input.value = ""; });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  add(Array.from(e.dataTransfer.files));
});
</script>
</body>
</html>
"""


if __name__ == "__main__":
    main()
