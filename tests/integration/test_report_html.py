"""report.html as a person sees it: rendered by headless Chromium (Debian's package, driven through
playwright), from the session's real adapt-then-ner run with its artifacts on the loopback S3 server
(tests/conftest.py). Checked: the screenshot is not blank, the plots are there (by element), the page
makes no network request; ``kfnlp report`` renders it again (locally, from the S3 run prefix, without
a summary, for a failed stage) and says what is missing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.cli import run_cli

CHROMIUM = os.environ.get("KFNLP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    """Chromium under playwright; skipped only where it cannot be installed (not root, not there):
    `make test` installs it, and as root (CI) a missing browser fails."""
    if not os.access(CHROMIUM, os.X_OK) or not _importable("playwright"):
        if os.geteuid() == 0:
            pytest.fail(f"{CHROMIUM} or playwright is missing: `make test` installs both", pytrace=False)
        pytest.skip(f"{CHROMIUM} or playwright is missing (apt-get install chromium; pip install -e '.[dev]')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _open(browser, path: Path, tmp_path: Path) -> dict:
    """Load a report as a user opens it from disk: what it requested, its screenshot and its elements."""
    from PIL import Image, ImageStat

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri(), wait_until="load")
    shot = tmp_path / f"{path.parent.name}-{path.stem}.png"
    page.screenshot(path=str(shot), full_page=True)
    image = Image.open(shot).convert("L")
    seen = {
        "requests": requests,
        "stddev": ImageStat.Stat(image).stddev[0],
        "ink": sum(1 for v in image.getdata() if v < 200) / (image.width * image.height),
        "svgs": page.locator("svg").count(),
        "labelled": page.locator("svg[role=img][aria-label]").count(),
        "captions": page.locator("figure figcaption").count(),
        "h2": page.locator("h2").all_inner_texts(),
        "sections": {s.get_attribute("id"): s for s in page.locator("section").all()},
        "text": page.locator("body").inner_text(),
        # the loss plots that drew a curve (training loss, evaluation loss or both)
        "train_curves": page.locator("svg:has([id$='-train-loss']), svg:has([id$='-eval-loss'])").count(),
    }
    page.emulate_media(media="print")
    seen["print_svgs_visible"] = sum(1 for s in page.locator("svg").all() if s.is_visible())
    seen["page"] = page
    return seen


def _looks_rendered(seen: dict) -> None:
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
    assert seen["stddev"] > 20 and seen["ink"] > 0.01, "the screenshot is (nearly) blank"
    assert "Traceback" not in seen["text"]


@pytest.fixture
def run(adapt_then_ner_on_s3, monkeypatch):
    adapt_then_ner_on_s3["server"].start()  # a test before may have stopped it
    for name, value in adapt_then_ner_on_s3["server"].env().items():
        monkeypatch.setenv(name, value)
    return adapt_then_ner_on_s3


def _models_with_a_loss(summary: dict) -> int:
    """How many train stages logged a training or an evaluation loss (a loss curve to draw)."""
    from kfnlp.storage import read_any_manifest

    count = 0
    for uri in summary["artifacts"]["models"].values():
        training = read_any_manifest(uri)["training"]
        rows = training.get("history") or training.get("losses") or []
        count += any("loss" in row or "eval_loss" in row for row in rows)
    return count


def test_the_run_report_shows_every_plot_and_loads_nothing(run, browser, tmp_path):
    out, summary = run["out"], run["summary"]
    assert "report.html" in run["result"].stdout
    seen = _open(browser, out / "report.html", tmp_path)
    _looks_rendered(seen)
    for heading in ("Stages", "Training", "Perplexity", "Scores", "Data", "Examples", "Registry"):
        assert heading in seen["h2"], seen["h2"]
    assert "Missing from this report" not in seen["h2"] and "could not be" not in seen["text"]
    models = summary["artifacts"]["models"]
    assert len(models) == 3  # train-mlm and the two train-ner
    from kfnlp.artifacts.evaluation import read_evaluation

    evaluations = [read_evaluation(uri) for uri in summary["artifacts"]["evaluations"].values()]
    matrices = sum(1 for e in evaluations if "confusion" in e)  # NER evaluations' word-label matrices, when written
    # timeline + a loss plot per train stage + perplexity + F1 bars + a confusion matrix per evaluation with one
    assert seen["svgs"] == 1 + len(models) + 1 + 1 + matrices
    assert seen["labelled"] == seen["svgs"] == seen["captions"]
    assert seen["train_curves"] == _models_with_a_loss(summary) > 0
    primary = summary["metrics"]["comparison"]["primary"]
    assert f"[{primary['low']:+.4f}, {primary['high']:+.4f}]" in seen["text"]  # the bootstrap interval
    assert summary["metrics"]["comparison"]["verdict"] in seen["text"]
    assert summary["artifacts"]["registry"]["uri"] in seen["text"]
    assert seen["print_svgs_visible"] == seen["svgs"]  # printable: no plot hidden in print


def test_kfnlp_report_renders_the_same_page_again(run, browser, tmp_path):
    result = run_cli("report", str(run["out"]), "--to", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing missing
    again = (tmp_path / "again" / "report.html").read_text(encoding="utf-8")
    assert again == (run["out"] / "report.html").read_text(encoding="utf-8")  # the same bytes: plots are deterministic
    assert (tmp_path / "again" / "report.md").read_text() == (run["out"] / "report.md").read_text()


def test_kfnlp_report_from_the_s3_run_prefix_rebuilds_from_the_artifacts(run, browser, tmp_path):
    prefix = f"{run['storage']}/{run['summary']['run']}"
    assert run_cli("report", prefix).returncode == 2  # s3:// needs --to
    result = run_cli("report", prefix, "--to", str(tmp_path / "s3"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("kfnlp: warning: ") and "summary.json: not there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    seen = _open(browser, tmp_path / "s3" / "report.html", tmp_path)
    _looks_rendered(seen)
    assert "Missing from this report" in seen["h2"]
    assert seen["train_curves"] == _models_with_a_loss(run["summary"])
    assert {"Training", "Perplexity", "Scores", "Examples"} <= set(seen["h2"])


def test_a_run_without_a_summary_renders_from_its_task_directories(run, browser, tmp_path):
    copy = tmp_path / "interrupted"
    shutil.copytree(run["out"], copy, ignore=shutil.ignore_patterns("summary.json", "report.*"))
    result = run_cli("report", str(copy))
    assert result.returncode == 0, result.stderr
    assert "summary.json: not there" in result.stderr
    seen = _open(browser, copy / "report.html", tmp_path)
    _looks_rendered(seen)
    assert "Missing from this report" in seen["h2"] and "summary.json" in seen["text"]
    assert "Stages" in seen["h2"] and "Training" in seen["h2"]
    assert "summary.json: not there" in (copy / "report.md").read_text()


def test_a_failed_stage_and_a_lost_artifact_are_said_not_raised(run, browser, tmp_path):
    copy = tmp_path / "failed"
    copy.mkdir()
    summary = json.loads(json.dumps(run["summary"]))
    stage = next(s for s in summary["stages"] if s["name"] == "compare")
    stage.update(status="failed", error="InputError: the gold labels differ")
    stage.pop("wall_time_s", None), stage.pop("started", None)
    summary["status"] = "failed"
    lost = next(name for name in summary["artifacts"]["models"] if name.startswith("train-ner"))  # one with curves
    summary["artifacts"]["models"][lost] = f"{run['storage']}/no-such-run/{lost}/model"
    (copy / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    result = run_cli("report", str(copy))
    assert result.returncode == 0, result.stderr
    seen = _open(browser, copy / "report.html", tmp_path)
    _looks_rendered(seen)
    assert "compare failed" in seen["text"] and "the gold labels differ" in seen["text"]
    assert "Missing from this report" in seen["h2"] and f"training history of {lost}" in seen["text"]
    assert seen["train_curves"] == _models_with_a_loss(run["summary"]) - 1


def test_a_missing_directory_is_one_line_and_exit_2(tmp_path):
    result = run_cli("report", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"kfnlp: error: {tmp_path / 'nothing'}: no such run directory"
