"""`make report`: Snakemake's self-contained HTML report of a finished config/ci.yaml run, read and opened in a browser.

What it proves, on the report that ``snakemake --report`` writes for the ``dag_run`` working directory:

- its results are exactly the workflow's tables (every ``results/tables/*.csv``; their ``.md`` twins are the same
  tables in text) and figures (every file under ``results/figures/``): none missing, none extra; each sits in its
  expected category (RLRT, Baselines, Analyses, RLT, Training) and subcategory, has a one-value label that names it
  in the result lists (unique within its list, else the report's table would merge rows), and a non-empty caption
  that names the paper table / figure it reproduces;
- every embedded file is the workflow's output byte for byte; each PNG decodes to a non-blank image, each CSV to a
  rectangular table with a header, each HTML heatmap to a page with its shaded tokens;
- in headless Chromium the report's JavaScript app starts without a console error, and every result opened the way
  a reader does (menu -> category -> subcategory -> the row's eye button) renders: a PNG as an <img> whose decoded
  size is the file's, an HTML heatmap as an iframe showing its tokens, a table as a download link to its CSV; the
  row's info button shows the caption. Screenshots of the start page and of one figure page are written to the
  test's tmp folder (report_start.png, report_figure.png).

The browser is the Debian packages chromium + chromium-driver, installed with apt-get when the test runs as root;
where they cannot be had the browser test is skipped with the reason, or fails under the CI environment variable.
Set RLRT_TEST_LOCAL_DAG to the working directory of an earlier local ci.yaml run (results/ inside) to report on it
instead of running ``dag_run`` (saves minutes when iterating on this file alone).
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from conftest import snakemake

CATEGORIES = {"RLRT", "Baselines", "Analyses", "RLT", "Training", "Claims"}
# Result path pattern -> (category, subcategory, the paper item its caption must name).
EXPECTED = {
    "results/tables/table1.csv": ("RLRT", "Tables", "RLRT Table 1"),
    "results/tables/table3.csv": ("RLRT", "Tables", "RLRT Table 3"),
    "results/tables/sweeps.csv": ("RLRT", "Tables", "RLRT Table 5"),
    "results/figures/fig9_ablations.png": ("RLRT", "Figures", "RLRT Fig. 9"),
    "results/tables/table4.csv": ("Baselines", "Tables", "RLRT Table 4"),
    "results/figures/fig8_passk.png": ("Baselines", "Figures", "RLRT Fig. 8"),
    "results/figures/fig2_heatmap_*.png": ("Analyses", "Fig 2 / 12: asymmetry heatmaps", "RLRT Figs 2"),
    "results/figures/fig2_heatmap_*.html": ("Analyses", "Fig 2 / 12: asymmetry heatmaps", "RLRT Figs 2"),
    "results/tables/table2_markers.csv": ("Analyses", "Table 2 / Fig 3: explore-exploit markers", "RLRT Table 2"),
    "results/figures/fig3_markers.png": ("Analyses", "Table 2 / Fig 3: explore-exploit markers", "RLRT Fig 3"),
    "results/figures/fig6_reflection.png": ("Analyses", "Fig 6: reflection injection", "RLRT Fig 6"),
    "results/figures/fig7_shift.png": ("Analyses", "Fig 7: distribution shift", "RLRT Fig 7"),
    "results/tables/claims.csv": ("Claims", "Tables", "RLRT and RLT papers"),
    "results/figures/claims.png": ("Claims", "Figures", "RLRT and RLT papers"),
    "results/tables/rlt_table1.csv": ("RLT", "Tables", "RLT paper Table 1"),
    "results/tables/rlt_table2.csv": ("RLT", "Tables", "RLT paper Table 2"),
    "results/figures/rlt_countdown.png": ("RLT", "Figures", "RLT paper Fig. 5, left"),
    "results/figures/rlt_reward_rank.png": ("RLT", "Figures", "RLT paper Fig. 5, right"),
    "results/figures/fig5_training_curves.png": ("Training", "Figures", "RLRT Fig. 5"),
}
SCREENSHOT_OF = "results/figures/fig9_ablations.png"
PACKAGES = ("chromium", "chromium-driver")
WAIT_S = 20


def expected(path: str) -> tuple[str, str, str]:
    hits = [v for pattern, v in EXPECTED.items() if fnmatch.fnmatchcase(path, pattern)]
    assert len(hits) == 1, f"{path}: matches {len(hits)} entries of EXPECTED"
    return hits[0]


def script_json(page: str, name: str):
    """A ``var <name> = <json>;`` the report embeds in ``<script id="<name>">``."""
    m = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', page, re.S)
    assert m, f"no <script id={name!r}> in the report"
    return json.loads(m.group(1))


def decode(data_uri: str) -> tuple[str, bytes]:
    head, _, payload = data_uri.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head[:100]
    return head[5:].split(";")[0], base64.b64decode(payload)


def text_of(caption_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", caption_html)).split())


@pytest.fixture(scope="module")
def workdir(request) -> Path:
    given = os.environ.get("RLRT_TEST_LOCAL_DAG")
    return Path(given) if given else request.getfixturevalue("dag_run")


@pytest.fixture(scope="module")
def report(workdir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(workdir, "--report", str(out))
    return out


@pytest.fixture(scope="module")
def embedded(report) -> tuple[dict, dict]:
    page = report.read_text(encoding="utf-8")
    return script_json(page, "results"), script_json(page, "categories")


def test_report_holds_every_table_and_figure(workdir, embedded):
    results, categories = embedded
    on_disk = {str(p.relative_to(workdir)) for p in (workdir / "results" / "tables").glob("*.csv")}
    on_disk |= {str(p.relative_to(workdir)) for p in (workdir / "results" / "figures").iterdir() if p.is_file()}
    assert set(results) == on_disk, (f"missing from the report: {sorted(on_disk - set(results))}; "
                                     f"not a table / figure of the run: {sorted(set(results) - on_disk)}")
    for pattern in EXPECTED:
        assert fnmatch.filter(results, pattern), f"no result matches {pattern}"
    assert set(categories) == CATEGORIES
    listed = {p: (cat, sub) for cat, subs in categories.items() for sub, paths in subs.items() for p in paths}
    assert set(listed) == set(results)
    for cat, subs in categories.items():
        for sub, paths in subs.items():
            labels = [results[p]["labels"]["result"] for p in paths]
            assert len(set(labels)) == len(labels), f"{cat} / {sub}: duplicate labels {labels}"
    for path, entry in results.items():
        category, subcategory, paper_item = expected(path)
        assert listed[path] == (category, subcategory), path
        assert set(entry["labels"]) == {"result"} and entry["labels"]["result"].strip(), (path, entry["labels"])
        caption = text_of(entry["caption"])
        assert paper_item in caption, f"{path}: caption does not name {paper_item!r}: {caption[:200]}"
        assert len(caption) > 100, f"{path}: caption too short: {caption!r}"

        mime, data = decode(entry["data_uri"])
        assert mime == entry["mime_type"]
        assert data == (workdir / path).read_bytes(), f"{path}: embedded bytes differ from the file"
        if mime == "image/png":
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                assert img.width > 100 and img.height > 100, (path, img.size)
                extrema = img.convert("L").getextrema()
                assert extrema[0] < extrema[1], f"{path}: blank image (every pixel {extrema[0]})"
        elif mime == "text/csv":
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))  # the CI run finds no marker: header only
            assert rows and all(rows[0]) and all(len(r) == len(rows[0]) for r in rows), f"{path}: not a table"
        else:
            assert mime == "text/html", (path, mime)
            assert "<span" in data.decode("utf-8"), f"{path}: no shaded tokens"


# ------------------------------------------------------------------------------------------------- in the browser


def browser_unavailable(reason: str) -> None:
    """Skip with ``reason`` -- or fail when the CI environment variable is set: a skipped browser check would look
    green there."""
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"headless Chromium unavailable: {reason}")


def chromium_binaries() -> tuple[str, str]:
    """(chromium, chromedriver): the Debian packages' binaries, apt-get installed if missing (root + apt only)."""
    def found():
        return shutil.which("chromium"), shutil.which("chromedriver")

    if all(found()):
        return found()
    if os.geteuid() != 0:
        browser_unavailable(f"not root, and {' / '.join(PACKAGES)} not installed")
    if not shutil.which("apt-get"):
        browser_unavailable(f"no apt-get to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=300)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not all(found()):
        browser_unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {proc.stderr.strip()[-1500:]}")
    return found()


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = chromium_binaries()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        browser_unavailable(f"selenium not installed (the test extra): {e}")
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1000", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def severe_console(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def menu_item(label: str) -> str:
    """XPath of a navbar entry (menu, category or subcategory list): <a><svg/><span>label</span></a>."""
    return f"//nav//li/a[span[normalize-space()={json.dumps(label)}]]"


class Reader:
    """Drives the report the way a reader does, failing with the result's path when something does not show."""

    def __init__(self, driver):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.wait = driver, WebDriverWait(driver, WAIT_S)

    def until(self, condition, what: str):
        from selenium.common.exceptions import TimeoutException

        try:
            return self.wait.until(condition)
        except TimeoutException:
            pytest.fail(f"after {WAIT_S} s: {what}", pytrace=False)

    def click(self, xpath: str, what: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.until(ec.element_to_be_clickable((By.XPATH, xpath)), f"nothing to click for {what}").click()

    def open_list(self, categories: dict, cat: str, sub: str) -> None:
        """Menu -> category -> subcategory (the report skips the subcategory menu of a single-subcategory one)."""
        self.click(menu_item(cat), f"category {cat!r}")
        if len(categories[cat]) > 1:
            self.click(menu_item(sub), f"subcategory {cat} / {sub}")

    def check(self, path: str, entry: dict, screenshot: Path | None) -> None:
        """From its row in the open list: the result renders (eye button), then its caption shows (info button)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        row = f"//nav//table/tbody/tr[td[1][normalize-space()={json.dumps(entry['labels']['result'])}]]"
        view, info = f"({row}/td[last()]//a)[1]", f"({row}/td[last()]//a)[2]"
        if entry["mime_type"] == "text/csv":  # the report offers tables as a download of the CSV
            link = self.until(ec.presence_of_element_located((By.XPATH, view)), f"{path}: no row")
            assert link.get_attribute("href") == entry["data_uri"], f"{path}: the view button links elsewhere"
            assert link.get_attribute("download") == Path(path).name
        elif entry["mime_type"] == "image/png":
            self.click(view, path)
            shown = self.until(lambda d: d.execute_script(
                "const img = [...document.images].find(i => i.src === results[arguments[0]].data_uri);"
                "return img && img.complete && img.naturalWidth > 0 ? "
                "[img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().width] : null;", path),
                f"{path}: the image does not render")
            with Image.open(io.BytesIO(decode(entry["data_uri"])[1])) as img:
                assert shown[:2] == list(img.size), f"{path}: rendered {shown[:2]}, file {img.size}"
            assert shown[2] > 0, f"{path}: the image is not laid out"
            if screenshot:
                self.driver.save_screenshot(str(screenshot))
        else:  # an HTML heatmap, shown in an iframe
            self.click(view, path)
            frame = self.until(ec.presence_of_element_located((By.TAG_NAME, "iframe")), f"{path}: no iframe")
            self.driver.switch_to.frame(frame)
            try:
                self.until(lambda d: d.execute_script("return document.querySelectorAll('.traj span').length > 0"),
                           f"{path}: the heatmap's tokens do not render")
            finally:
                self.driver.switch_to.default_content()
        self.click(info, f"{path}: info")
        self.until(ec.text_to_be_present_in_element((By.TAG_NAME, "nav"), text_of(entry["caption"])[:60]),
                   f"{path}: the info view shows no caption")
        self.click("//nav//ol//a[normalize-space()='Results']", "the Results breadcrumb")


def test_report_renders_every_figure_in_chromium(report, embedded, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    results, categories = embedded
    reader = Reader(browser)
    browser.get(report.as_uri())
    reader.until(ec.invisibility_of_element_located((By.ID, "loading-screen")), "the report does not load")
    for cat in sorted(CATEGORIES):
        reader.until(ec.visibility_of_element_located((By.XPATH, menu_item(cat))), f"no menu entry {cat!r}")
    assert severe_console(browser) == [], "the report's JavaScript logged errors on load"
    browser.save_screenshot(str(tmp_path / "report_start.png"))

    for cat in sorted(categories):
        for sub in sorted(categories[cat]):
            for path in categories[cat][sub]:
                reader.open_list(categories, cat, sub)
                reader.check(path, results[path], tmp_path / "report_figure.png" if path == SCREENSHOT_OF else None)
    assert severe_console(browser) == [], "the report's JavaScript logged errors while browsing"
    assert (tmp_path / "report_figure.png").exists()
