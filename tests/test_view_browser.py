"""``songcorpus view`` in a real headless browser (Debian's chromium through chromedriver, driven by selenium) on the
curated demo corpus and an evaluation of a tiny SAMUeL run: the funnel's numbers are the catalog's, a filter narrows
the table to the catalog's count, each ``<audio>`` loads and reports its sample's duration and seeks (byte ranges
inside the shard tar), an augmented sample is marked, the sample page shows the ``inspect`` drawing, the evaluation
page lists its systems and links a window to its page, where the generated audio plays beside the real one. The
same corpus served from the local S3 server (credentials never shown), and the static export opened from file://.

Screenshots go to $SONGCORPUS_VIEW_SCREENSHOTS (docs/images makes the documentation's; default: a temporary folder).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import duckdb
import pytest
import soundfile as sf

from songcorpus.io import storage
from songcorpus.view.corpus import Corpus
from songcorpus.view.evaluations import Evaluation
from songcorpus.view.server import running
from songcorpus.view.static_export import export

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT_S = 240  # explicit waits: generous for a loaded 2-core machine (a first drawing takes seconds there)
SHOT_MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def view_eval(demo_ray, tmp_path_factory) -> Path:
    """A tiny SAMUeL run scored on 2 demo windows (onset F1 only), its generated stems kept for listening."""
    from test_trainer import tiny_generator

    from songcorpus.cli import main
    from songcorpus.train.launch import launch_local

    root = tmp_path_factory.mktemp("view_eval")
    launch_local(tiny_generator("samuel", 2), str(demo_ray), root / "samuel", progress=False)
    assert main(["evaluate", str(root / "samuel"), "--data", str(demo_ray), "--split", "train", "--limit", "2",
                 "--metrics", "onset_f1", "--keep-audio", "2", "--out", str(root / "eval"), "--bootstrap", "50",
                 "--steps", "2", "--no-progress"]) == 0
    return root / "eval"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromedriver are missing: `bash setup.sh` installs Debian's chromium and "
                    "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # named, so selenium-manager never looks for a browser on the network
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--mute-audio", "--disable-gpu", "--allow-file-access-from-files"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(demo_ray, view_eval):
    corpus = Corpus.open(demo_ray)
    evals = [Evaluation.open(view_eval, 0)]
    with running(corpus, evals) as base:
        yield base
    evals[0].close()
    corpus.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SONGCORPUS_VIEW_SCREENSHOTS") or tmp_path_factory.mktemp("view_screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sql(out: Path, query: str, args: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(query, args or []).fetchall()
    finally:
        con.close()


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(condition, message=f"waiting for {what}")


def screenshot(driver, path: Path, height: int = 1500) -> None:
    """The page's top ``height`` pixels at 1280 wide, as a palette PNG under 200 KB."""
    from PIL import Image

    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(full, height))
    png = driver.get_screenshot_as_png()
    driver.set_window_size(1280, 900)
    for colours in (128, 64, 32):
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colours)
        image.save(path, format="PNG", optimize=True)
        if path.stat().st_size < SHOT_MAX_BYTES:
            return
    raise AssertionError(f"{path} is {path.stat().st_size} bytes even at 32 colours")


def audio_duration(driver, css: str = "audio") -> list[float]:
    """Each matching <audio>'s duration once its metadata loaded (the browser decoded the header it fetched)."""
    wait(driver, lambda d: d.execute_script(
        f"return Array.from(document.querySelectorAll('{css}')).every(a => a.readyState >= 1 || a.error)"),
        "audio metadata")
    errors = driver.execute_script(f"return Array.from(document.querySelectorAll('{css}')).map(a => a.error && a.error.code)")
    assert not any(errors), errors
    return driver.execute_script(f"return Array.from(document.querySelectorAll('{css}')).map(a => a.duration)")


def test_overview_funnel_numbers_are_the_catalogs(browser, site, demo_ray, shots):
    from selenium.webdriver.common.by import By

    browser.get(site + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#funnel tbody tr")
    shown = [(r.get_attribute("data-status"), r.get_attribute("data-stage"), r.get_attribute("data-reason"),
              int(r.get_attribute("data-tracks")), int(r.find_elements(By.TAG_NAME, "td")[3].text.replace(",", "")))
             for r in rows]
    want = sql(demo_ray, "SELECT status, stage, reason_code, tracks FROM funnel")
    assert [s[:4] for s in shown] == [tuple(w) for w in want]
    assert all(s[3] == s[4] for s in shown)  # the visible number is the attribute's
    total = sql(demo_ray, "SELECT count(*) FROM tracks")[0][0]
    assert int(browser.find_element(By.ID, "funnel-total").text) == total
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart .gate-line")) >= 5  # the lite gates, drawn
    screenshot(browser, shots / "view-overview.png", 1400)


def test_a_filter_narrows_the_table(browser, site, demo_ray, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/tracks")
    before = int(browser.find_element(By.ID, "result-count").get_attribute("data-total"))
    assert before == sql(demo_ray, "SELECT count(*) FROM tracks")[0][0]
    Select(browser.find_element(By.NAME, "status")).select_by_value("rejected")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait(browser, lambda d: "status=rejected" in d.current_url, "the filtered URL")
    after = int(browser.find_element(By.ID, "result-count").get_attribute("data-total"))
    rejected = sql(demo_ray, "SELECT track_id FROM tracks WHERE status = 'rejected'")
    assert 0 < after == len(rejected) < before
    ids = {r.get_attribute("data-id") for r in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")}
    assert ids == {t for (t,) in rejected}
    screenshot(browser, shots / "view-tracks.png", 700)
    browser.find_element(By.CSS_SELECTOR, "#rows tbody tr a").click()  # a row links to its track's page
    wait(browser, lambda d: "/track/" in d.current_url, "the track page")
    assert browser.find_element(By.ID, "track-status").text == "rejected"


def test_sample_page_plays_its_audio_and_shows_the_drawing(browser, site, demo_ray, shots):
    from selenium.webdriver.common.by import By

    key, duration, method = sql(demo_ray, "SELECT w.key, w.duration_s, t.caption_method FROM windows w JOIN tracks t "
                                          "USING (track_id) WHERE w.augmentation_json IS NULL ORDER BY w.key LIMIT 1")[0]
    browser.get(f"{site}/window/{key}")
    durations = audio_duration(browser)
    members = [a.get_attribute("data-member") for a in browser.find_elements(By.TAG_NAME, "audio")]
    assert members == ["mix.flac", "vocals.flac", "accompaniment.flac"]
    assert all(abs(d - duration) < 0.05 for d in durations), (durations, duration)
    seeked = browser.execute_async_script(
        "const to = arguments[0], done = arguments[1], a = document.querySelector('audio');"
        "a.addEventListener('seeked', () => done(a.currentTime), {once: true}); a.currentTime = to;",
        duration * 0.75)
    assert abs(seeked - duration * 0.75) < 0.1  # seeking fetches a byte range inside the shard tar
    wait(browser, lambda d: d.execute_script("const i = document.getElementById('drawing');"
                                             "return i.complete && i.naturalWidth > 0"), "the drawing")
    assert browser.execute_script("return document.getElementById('drawing').naturalWidth") > 600
    assert f"caption_method: {method}" in browser.find_element(By.TAG_NAME, "main").text
    screenshot(browser, shots / "view-sample.png", 1500)


def test_an_augmented_sample_is_marked(browser, site, demo_ray):
    from selenium.webdriver.common.by import By

    from songcorpus.pipelines.readers.inspect_sample import describe_augmentation, read_sample

    key = sql(demo_ray, "SELECT key FROM windows WHERE augmentation_json IS NOT NULL ORDER BY key LIMIT 1")[0][0]
    browser.get(f"{site}/window/{key}")
    assert browser.find_element(By.ID, "augmented").text == "augmented"
    meta = json.loads(read_sample(demo_ray, key)["json"])
    assert describe_augmentation(meta["augmentation"]) in browser.find_element(By.CSS_SELECTOR, ".aug-note").text
    assert len(browser.find_elements(By.CSS_SELECTOR, ".player .badge.aug")) == 3


def test_evaluation_page_links_a_window_where_the_generated_audio_plays(browser, site, view_eval, shots):
    from selenium.webdriver.common.by import By

    con = duckdb.connect(str(view_eval / "metrics.duckdb"), read_only=True)
    metrics = [m for (m,) in con.execute("SELECT DISTINCT metric FROM summary ORDER BY metric").fetchall()]
    model_mean = con.execute("SELECT mean FROM summary WHERE system = 'model' AND metric = 'onset_f1'").fetchone()[0]
    con.close()
    browser.get(site + "/eval/0")
    rows = browser.find_elements(By.CSS_SELECTOR, "#systems tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text.split(" (")[0] for r in rows] == metrics
    headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#systems thead th")]
    assert {"model", "untrained", "floor", "codec_ceiling", "ground_truth"} <= set(headers)
    assert any("paired" in h for h in headers)
    onset = next(r for r in rows if r.text.startswith("onset_f1"))
    assert f"{model_mean:.3g}" in onset.find_elements(By.TAG_NAME, "td")[headers.index("model")].text
    screenshot(browser, shots / "view-eval.png", 900)
    kept = json.loads((view_eval / "eval.json").read_text())["audio"]["keys"]["model"]
    link = browser.find_element(By.CSS_SELECTOR, "#per-window tbody tr a")
    key = link.text
    assert key in kept
    link.click()
    wait(browser, lambda d: f"/window/{key}" in d.current_url, "the window page")
    generated = audio_duration(browser, "figure.generated audio")
    truth = sf.info(view_eval / "audio" / "model" / f"{key}.mix.flac").duration
    assert len(generated) == 3 and all(abs(d - truth) < 0.05 for d in generated)
    assert browser.find_elements(By.XPATH, "//figcaption[text()='ground truth mix']")


def test_static_export_opens_from_disk(browser, demo_ray, view_eval, tmp_path):
    from selenium.webdriver.common.by import By

    corpus, ev = Corpus.open(demo_ray), Evaluation.open(view_eval, 0)
    try:
        done = export(corpus, [ev], tmp_path / "share", clips=2)
    finally:
        ev.close()
        corpus.close()
    share = tmp_path / "share"
    assert done["samples"] == 2 and len(list((share / "window").glob("*.html"))) == 2
    for page in share.rglob("*.html"):  # relative links only, each to a file the export wrote
        for target in re.findall(r'(?:href|src)="([^"#?]+)"', page.read_text()):
            assert (page.parent / target).resolve().is_file(), (page, target)
    browser.get((share / "index.html").as_uri())
    assert int(browser.find_element(By.ID, "funnel-total").text) == sql(demo_ray, "SELECT count(*) FROM tracks")[0][0]
    browser.get(next((share / "window").glob("*.html")).as_uri())
    assert all(d > 1 for d in audio_duration(browser))


def test_a_corpus_in_the_local_s3_server(s3, demo_ray, tmp_path):
    from s3_server import KEY_ID, SECRET

    marker = storage.read_published(demo_ray)
    out = f"{s3}/corpus"
    for rel in [*marker["objects"], "published.json"]:
        storage.upload(demo_ray / rel, storage.join(out, rel))
    keyed = out.replace("s3://", f"s3://{KEY_ID}:{SECRET}@")  # a URL that carries its credentials
    corpus = Corpus.open(keyed)
    try:
        assert corpus.name == out and SECRET not in corpus.name
        key, local = sql(demo_ray, "SELECT key, offsets_json FROM windows ORDER BY key LIMIT 1")[0]
        file, offset, size = json.loads(local)["mix.flac"]
        with running(corpus, []) as base:
            pages = {}
            for path in ("/", "/tracks?status=accepted", f"/window/{key}"):
                with urllib.request.urlopen(base + path) as r:
                    pages[path] = r.read().decode()
            funnel = [(m[0], int(m[1])) for m in re.findall(r'data-status="(\w+)"[^>]*data-tracks="(\d+)"', pages["/"])]
            assert funnel == [(s, n) for s, n in sql(demo_ray, "SELECT status, tracks FROM funnel")]
            assert all(SECRET not in p and KEY_ID not in p for p in pages.values())
            request = urllib.request.Request(f"{base}/audio/{key}/mix.flac", headers={"Range": "bytes=100-1099"})
            with urllib.request.urlopen(request) as r:
                assert r.status == 206 and r.headers["Content-Range"] == f"bytes 100-1099/{size}"
                with open(demo_ray / "shards" / file, "rb") as fh:
                    fh.seek(offset + 100)
                    assert r.read() == fh.read(1000)
        done = export(corpus, [], tmp_path / "share", clips=1)
        assert done["samples"] == 1 and (tmp_path / "share" / "index.html").is_file()
        assert not any(SECRET in p.read_text(errors="replace") for p in (tmp_path / "share").rglob("*.html"))
    finally:
        corpus.close()
    shutil.rmtree(tmp_path / "share", ignore_errors=True)
