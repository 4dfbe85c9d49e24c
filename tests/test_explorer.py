"""The explorer page (`topicvae report --html`) and the pyLDAvis export (`topicvae export --pyldavis`).

The pages are checked as data (what they say about the model) and, where a browser can be
had, loaded in headless Chromium through Selenium: no console error, the topics, the pairs
and both Plotly figures drawn.

``python tests/test_explorer.py --screenshots MODEL_DIR [--corpus C --labels L]`` writes the
screenshots in docs/img/ from a saved model (docs/topics.md says how they were made).
"""

from __future__ import annotations

import gzip
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from topicvae import TopicModel
from topicvae.cli import app
from topicvae.topics.evaluation import evaluate
from topicvae.topics.explorer import explorer_data, render_explorer
from topicvae.topics.export import pyldavis_input

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "corpora" / "20newsgroups-sample.txt.gz"
SAMPLE_LABELS = ROOT / "corpora" / "20newsgroups-sample.labels.txt"

pytestmark = pytest.mark.filterwarnings("ignore::topicvae.EmptyDocumentWarning")


@pytest.fixture(scope="module")
def docs() -> list[str]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


@pytest.fixture(scope="module")
def fitted(docs, tmp_path_factory):
    """A small model saved with `topicvae fit --out` (report.json names its corpus)."""
    out = tmp_path_factory.mktemp("explorer") / "run"
    result = CliRunner().invoke(app, ["fit", str(SAMPLE), "--groups", "2x5", "--epochs", "15", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out, TopicModel.load(out)


def _external_resources(page: str) -> list[str]:
    """What the page would fetch: scripts, style sheets, images and frames from the network."""
    return re.findall(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["'](https?:[^"']*)""", page)


def test_the_explorer_data_shows_every_topic_once_with_pruned_ones_apart(fitted):
    _, model = fitted
    data = explorer_data(model)
    information = model.analysis_.information.per_variable
    shown = [t for g in data["groups"] for t in g["active"] + g["pruned"]]
    assert sorted(t["label"] for t in shown) == sorted(model.topic_labels())
    active = dict(zip(model.analysis_.active_labels(), [True] * 99))
    for group in data["groups"]:
        assert all(t["label"] in active for t in group["active"]) and not any(t["label"] in active for t in group["pruned"])
        mis = [t["mi"] for t in group["active"]]
        assert mis == sorted(mis, reverse=True)  # active topics by MI
    np.testing.assert_allclose(sorted(t["mi"] for t in shown), sorted(information.tolist()))
    correlations = data["correlations"]
    assert correlations["topics"] == [model.topic_labels()[i] for i in model.analysis_.correlations.topics]
    assert all(p["topic_a"].split(":")[0] != p["topic_b"].split(":")[0] for p in correlations["pairs"])  # across groups


def test_the_page_is_self_contained_and_names_the_topics_and_pairs(fitted):
    _, model = fitted
    data = explorer_data(model)
    page = render_explorer(data)
    assert not _external_resources(page)
    assert "Plotly.newPlot" in page and page.count("plotly.js v") <= 2  # the library once, inline
    for group in data["groups"]:
        for topic in group["active"]:
            assert f'data-topic="{topic["label"]}"' in page and " ".join(topic["words"]) in page
    for pair in data["correlations"]["pairs"]:
        assert f"<td>{pair['topic_a']}</td><td>{pair['topic_b']}</td>" in page


def test_words_are_escaped_on_the_page(fitted):
    _, model = fitted
    data = explorer_data(model)
    data["groups"][0]["active"][0]["words"][0] = "<script>alert(1)</script>"
    assert "<script>alert(1)</script>" not in render_explorer(data)


def test_an_evaluation_adds_coherence_and_dominant_labels(fitted, docs):
    _, model = fitted
    labels = SAMPLE_LABELS.read_text(encoding="utf-8").splitlines()[: len(docs)]
    evaluation = evaluate(model, docs, labels=labels, corpus_name="sample")
    data = explorer_data(model, evaluation=evaluation)
    topics = {t["label"]: t for g in data["groups"] for t in g["active"] + g["pruned"]}
    per_topic = evaluation["labels"]["per_topic"]
    for label, entry in per_topic.items():
        assert topics[label]["dominant_label"] == entry["label"] and topics[label]["label_share"] == entry["share"]
    assert data["metrics"]["label purity"] == evaluation["labels"]["purity"]
    assert data["metrics"]["perplexity"] == evaluation["perplexity"]["corpus_level"]["value"]
    assert [topics[k]["npmi"] for k in model.topic_labels()] == evaluation["coherence"]["npmi_document"]["per_topic"]


def test_the_pyldavis_matrices_are_the_models_as_docs_topics_defines_them(fitted, docs):
    _, model = fitted
    data = pyldavis_input(model, docs[:300])
    np.testing.assert_allclose(data.topic_term_dists, np.exp(model.topic_word_scores()), rtol=1e-4, atol=1e-9)
    theta = model.transform(docs[:300])
    keep = ~np.isnan(theta).any(axis=1)
    np.testing.assert_allclose(data.doc_topic_dists, theta[keep], rtol=1e-5)
    np.testing.assert_allclose(data.doc_topic_dists.sum(axis=1), 1.0, atol=1e-12)
    counts = model.vectorizer_.transform(docs[:300])
    np.testing.assert_array_equal(data.doc_lengths, np.asarray(counts.sum(axis=1)).ravel()[keep])
    np.testing.assert_array_equal(data.term_frequency, np.asarray(counts.sum(axis=0)).ravel())
    assert data.topic_labels == model.topic_labels() and data.vocab == model.vocabulary_


def test_pyldavis_refuses_nvdm_and_leaves_concrete_groups_out(docs):
    nvdm = TopicModel("nvdm", groups="4", epochs=1, device="cpu").fit(docs[:300])
    with pytest.raises(ValueError, match="model='nvdm' has none"):
        nvdm.to_pyldavis(docs[:300])
    mixed = TopicModel(groups="4,3c", epochs=1, device="cpu").fit(docs[:300])
    data = pyldavis_input(mixed, docs[:300])
    assert data.topic_labels == ["g0:0", "g0:1", "g0:2", "g0:3"] and data.topic_term_dists.shape[0] == 4


def test_the_commands_write_both_pages_and_refuse_bad_destinations(fitted, tmp_path):
    run, _ = fitted
    runner = CliRunner()
    explorer, ldavis = tmp_path / "explorer.html", tmp_path / "ldavis.html"
    result = runner.invoke(app, ["report", str(run), "--html", str(explorer), "--corpus", str(SAMPLE), "--labels", str(SAMPLE_LABELS)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(run), "--pyldavis", str(ldavis)])  # the corpus report.json names
    assert result.exit_code == 0, result.output
    for page in (explorer, ldavis):
        assert not _external_resources(page.read_text(encoding="utf-8"))
    result = runner.invoke(app, ["report", str(run), "--html", str(tmp_path)])
    assert result.exit_code == 1 and "is a directory" in result.output
    result = runner.invoke(app, ["report", str(run), "--html", str(tmp_path / "x.html"), "--labels", "x"])
    assert result.exit_code == 1 and "pass --corpus FILE too" in result.output and not (tmp_path / "x.html").exists()


# --- in a real browser ------------------------------------------------------------------------
def _chromium():
    """A headless Chromium driven by Selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("no Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver); .ci/run installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2200"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=options)


def _severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def browser():
    driver = _chromium()
    yield driver
    driver.quit()


def _load_in_browser(browser, command: list[str], page) -> None:
    """Write a page with the CLI, open it in Chromium, and check the console has no error."""
    result = CliRunner().invoke(app, [*command, str(page)])
    assert result.exit_code == 0, result.output
    browser.get(page.as_uri())
    assert not _severe(browser)


def test_the_explorer_page_loads_in_chromium_without_errors(fitted, tmp_path, browser):
    from selenium.webdriver.common.by import By

    run, model = fitted
    _load_in_browser(browser, ["report", str(run), "--html"], tmp_path / "explorer.html")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.topic")
    assert sorted(row.get_attribute("data-topic") for row in rows) == sorted(model.topic_labels())
    assert browser.find_elements(By.CSS_SELECTOR, "#information-plot .main-svg")  # Plotly drew both figures
    assert browser.find_elements(By.CSS_SELECTOR, "#correlation-plot .main-svg")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pairs tr.pair")) == len(explorer_data(model)["correlations"]["pairs"])
    assert browser.get_screenshot_as_png()[:4] == b"\x89PNG"


def test_the_pyldavis_page_loads_in_chromium_without_errors(fitted, tmp_path, browser):
    from selenium.webdriver.common.by import By

    run, model = fitted
    _load_in_browser(browser, ["export", str(run), "--pyldavis"], tmp_path / "ldavis.html")
    circles = browser.find_elements(By.CSS_SELECTOR, "#topicvae_ldavis circle.dot")  # one circle per topic
    assert len(circles) == len(model.topic_labels())


def _screenshots(argv: list[str]) -> None:
    """Write docs/img/explorer.png and docs/img/pyldavis.png from a saved model."""
    import argparse
    import tempfile
    import time

    parser = argparse.ArgumentParser()
    parser.add_argument("--screenshots", required=True, type=Path)
    parser.add_argument("--corpus")
    parser.add_argument("--labels")
    args = parser.parse_args(argv)
    runner = CliRunner()
    driver = _chromium()
    try:
        with tempfile.TemporaryDirectory() as folder:
            explorer, ldavis = Path(folder) / "explorer.html", Path(folder) / "ldavis.html"
            extra = (["--corpus", args.corpus] if args.corpus else []) + (["--labels", args.labels] if args.labels else [])
            for command in (["report", str(args.screenshots), "--html", str(explorer), *extra],
                            ["export", str(args.screenshots), "--pyldavis", str(ldavis)] + (["--corpus", args.corpus] if args.corpus else [])):
                result = runner.invoke(app, command)
                if result.exit_code:
                    raise SystemExit(result.output)
            for page, name, height in ((explorer, "explorer.png", None), (ldavis, "pyldavis.png", 900)):
                driver.set_window_size(1400, height or 1000)
                driver.get(page.as_uri())
                time.sleep(1.0)  # let the figures' transitions end
                if height is None:  # the whole page
                    driver.set_window_size(1400, min(8000, driver.execute_script("return document.body.scrollHeight") + 40))
                    time.sleep(0.5)
                if _severe(driver):
                    raise SystemExit(f"{name}: console errors {_severe(driver)}")
                (ROOT / "docs" / "img" / name).write_bytes(driver.get_screenshot_as_png())
                print(f"wrote docs/img/{name}")
    finally:
        driver.quit()


if __name__ == "__main__":
    _screenshots(sys.argv[1:])


def test_a_vocabulary_word_cannot_run_script_on_the_pyldavis_page(fitted, docs, tmp_path):
    from topicvae.topics.export import save_pyldavis_html

    _, model = fitted
    prepared = model.to_pyldavis(docs[:300])
    prepared.topic_info.loc[prepared.topic_info.index[0], "Term"] = "</script><script>alert(1)</script>"
    page = save_pyldavis_html(prepared, tmp_path / "ldavis.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in page


def test_pages_are_written_through_links_and_devices_and_bad_paths_are_named(fitted, tmp_path):
    import os

    run, _ = fitted
    runner = CliRunner()
    target = tmp_path / "real.html"
    link = tmp_path / "link.html"
    link.symlink_to(target)
    assert runner.invoke(app, ["report", str(run), "--html", str(link)]).exit_code == 0
    assert link.is_symlink() and target.stat().st_size > 100_000  # the link kept, its target written
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    import threading

    received = []
    reader = threading.Thread(target=lambda: received.append(len(fifo.read_bytes())))
    reader.start()
    assert runner.invoke(app, ["report", str(run), "--html", str(fifo)]).exit_code == 0
    reader.join(30)
    assert received and received[0] > 100_000 and not fifo.is_file()  # written into the pipe, not replaced
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(app, ["report", str(run), "--html", str(tmp_path / "afile" / "x.html")])
    assert result.exit_code == 1 and "afile is a file, not a folder" in result.output
