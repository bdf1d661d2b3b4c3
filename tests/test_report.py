"""The HTML report: structure checked offline, then the page loaded in a real headless Chromium."""

from __future__ import annotations

import io
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli as run

from smm_hotplug.hw.trace import Event
from smm_hotplug.report.sequence import Step, render

# sdm falls to code planted by the OS or by DMA, dma-guard only to the OS; the shipped design
# holds: three attack diagrams plus the shipped design's benign hot-add and hot-remove.
DESIGNS = ("sdm", "dma-guard", "smram-default-smbase")
ATTACKS = ("none", "os-code-at-default-smbase", "dma-code-at-default-smbase")
VIOLATED = {
    ("sdm", "os-code-at-default-smbase"),
    ("sdm", "dma-code-at-default-smbase"),
    ("dma-guard", "os-code-at-default-smbase"),
}
DIAGRAMS = len(VIOLATED) + 2


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    args = ["report", "-o", str(out), "--no-history"]  # the history section: tests/test_history.py
    args += [a for d in DESIGNS for a in ("--design", d)]
    args += [a for c in ATTACKS for a in ("--attack", c)]
    res = run(*args)
    assert res.returncode == 0, res.stderr
    assert f"{DIAGRAMS} diagrams" in res.stdout
    return out


class Outline(HTMLParser):
    """What a reader of the page would count: diagrams, their arrows, matrix cells, links."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[dict[str, str | None]] = []
        self.arrows: list[int] = []
        self.violations: list[int] = []
        self.cells: list[str] = []
        self.external: list[str] = []
        self.anchors: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.anchors.add(a["id"] or "")
        for key in ("src", "href"):
            value = a.get(key) or ""
            if value.startswith("#"):
                self.links.append(value[1:])
            elif value:
                self.external.append(value)
        if tag == "svg" and a.get("class") == "sequence":
            self.svgs.append(a)
            self.arrows.append(0)
            self.violations.append(0)
        elif tag == "g" and a.get("class") == "arrow":
            self.arrows[-1] += 1
        elif tag == "g" and a.get("class") == "violation":
            self.violations[-1] += 1
        elif tag == "td" and a.get("class"):
            self.cells.append(a["class"] or "")


def outline(path: Path) -> Outline:
    parser = Outline()
    parser.feed(path.read_text())
    return parser


def test_report_page_has_matrix_attack_and_benign_diagrams(report: Path):
    page = outline(report)
    assert len(page.svgs) == DIAGRAMS
    assert sorted(page.cells) == sorted(["violated"] * len(VIOLATED) + ["holds"] * (9 - len(VIOLATED)))
    for svg, arrows in zip(page.svgs, page.arrows, strict=True):
        assert int(svg["data-arrows"] or 0) == arrows > 5
    # every attack diagram highlights the step where the property breaks; the benign ones none
    assert page.violations == [1, 1, 1, 0, 0]
    # every violated cell links to a diagram on the page; nothing is fetched from elsewhere
    assert len(page.links) == len(VIOLATED) and set(page.links) <= page.anchors
    assert page.external == []
    text = report.read_text()
    assert "smm-code-integrity violated" in text
    assert "SMI entry: SMBASE 0x30000" in text  # the new CPU's first SMI
    assert re.search(r"RSM: SMBASE 0x30000 -&gt; 0x7[0-9a-f]+", text)  # relocated on the way out


def test_simulate_and_check_write_one_run_each(tmp_path: Path):
    sim = tmp_path / "sim.html"
    res = run("simulate", "--html", str(sim))
    assert res.returncode == 0, res.stderr
    page = outline(sim)
    assert len(page.svgs) == 1 and page.arrows[0] > 20 and page.violations == [0]
    chk = tmp_path / "check.html"
    res = run("check", "--design", "dma-guard", "--attack", "os-code-at-default-smbase", "--html", str(chk))
    assert res.returncode == 1
    page = outline(chk)
    assert len(page.svgs) == 1 and page.violations == [1] and page.cells == ["violated"]
    res = run("check", "--design", "smram-default-smbase", "--plug", "1", "--unplug", "0", "--html", str(chk))
    assert res.returncode == 0
    page = outline(chk)
    assert page.svgs == [] and page.cells == ["holds"]
    html = chk.read_text()
    assert "Hard cases reached: plug-before-broadcast (" in html
    assert 'title="hard cases reached: plug-before-broadcast">1/5 hard cases' in html
    assert 'href="#trace"' not in html  # a proof has no trace section to link to


def test_report_rejects_unknown_ids_and_bad_limits(tmp_path: Path):
    for args in (["--design", "nope"], ["--attack", "nope"], ["--max-states", "0"]):
        res = run("report", "-o", str(tmp_path / "r.html"), *args)
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "r.html").exists()
    # an output directory that does not exist is refused before any checking is done
    for args in (["report", "-o"], ["check", "--html"], ["simulate", "--html"]):
        res = run(*args, str(tmp_path / "missing" / "r.html"))
        assert res.returncode == 2 and "does not exist" in res.stderr and res.stderr.count("\n") == 1


def test_repeated_polling_collapses_into_one_arrow():
    poll = [Event("io", "cpu0", "inb 0x00b3 -> 0x00", True, ()) for _ in range(40)]
    steps = [Step(i, "cpu0", [ev]) for i, ev in enumerate(poll)]
    steps.append(Step(40, "cpu0", [Event("io", "cpu0", "outb 0x00b2 <- 0x04", True, ())]))
    diagram = render(steps, cpus=1)
    # consecutive accesses between the same two lifelines fold into one row whose tooltip lists them
    assert diagram.rows == 1 and diagram.arrows == 1
    assert "41× " in diagram.svg and diagram.svg.count("step ") == 41


# -- in a real browser ---------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,1000")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    return len(colours) if colours is not None else 1 << 20


@pytest.mark.requires("browser")  # a skip fails where SMM_HOTPLUG_REQUIRE_BROWSER=1 (.ci/run)
def test_report_in_headless_chromium(browser, report: Path):
    from selenium.webdriver.common.by import By

    browser.get(report.as_uri())
    assert browser.title == "smm-hotplug: designs × adversaries"
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    svgs = browser.find_elements(By.CSS_SELECTOR, "svg.sequence")
    assert len(svgs) == DIAGRAMS
    for svg in svgs:
        drawn = len(svg.find_elements(By.CSS_SELECTOR, "g.arrow"))
        assert drawn == int(svg.get_attribute("data-arrows")) > 5
        box = svg.rect
        assert box["width"] > 500 and box["height"] > 100  # laid out, not collapsed
    cells = browser.find_elements(By.CSS_SELECTOR, "table.matrix td.violated")
    assert len(cells) == len(VIOLATED)
    # the zoom buttons work: the first diagram grows, then comes back
    first = svgs[0]
    width = first.rect["width"]
    browser.find_element(By.CSS_SELECTOR, ".zoom button[data-z='1.25']").click()
    assert first.rect["width"] == pytest.approx(width * 1.25, rel=0.02)
    browser.find_element(By.CSS_SELECTOR, ".zoom button[data-z='reset']").click()
    assert first.rect["width"] == pytest.approx(width, rel=0.02)
    # what a reviewer sees is drawn: the page and the first attack diagram are far from blank
    assert distinct_colours(browser.get_screenshot_as_png()) > 50
    assert distinct_colours(first.screenshot_as_png) > 20
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
