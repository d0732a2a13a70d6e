"""dlguide report: real runs (two comparable sine runs, a digits classifier), a study folder
and a cv folder faked around copies of them, and hostile files; the page is read back with
html.parser, and once in Debian's headless chromium to see that every picture renders."""

from __future__ import annotations

import base64
import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

import dlguide
from dlguide._report import MAX_PICTURES, spread, write_report
from dlguide._report_html import PNG_MAGIC
from dlguide.testing import run_cli
from chromium import CHROMIUM, WAIT_S, Browser

SINE = ["epochs=2", "samples=256", "hidden=8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    made = {name: dlguide.run_task("example.sine", overrides=SINE, out=root / name, progress="none").run_dir
            for name in ("sine-a", "sine-b")}  # the same seed: comparable, over the same test split
    made["digits"] = dlguide.run_task("vision.classify", out=root / "digits", progress="none",
                                      overrides=["epochs=1", "limit_train_batches=4", "limit_eval_batches=2"]).run_dir
    return made


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock", "checkpoints", "tensorboard"))
    return to


@pytest.fixture(scope="module")
def study(runs, tmp_path_factory):
    """A folder as ``dlguide tune`` writes it: trial runs, study.json, its pictures."""
    folder = tmp_path_factory.mktemp("study")
    copy_run(runs["sine-a"], folder / "trial_0000")
    copy_run(runs["sine-b"], folder / "trial_0001")
    shutil.copy(runs["sine-a"] / "learning_curves.png", folder / "optimization_history.png")
    trials = [{"number": 0, "state": "COMPLETE", "value": 0.3, "params": {"lr": 0.01, "hidden": 8}, "epochs": 2},
              {"number": 1, "state": "COMPLETE", "value": 0.1, "params": {"lr": 0.02, "hidden": 16}, "epochs": 2},
              {"number": 2, "state": "PRUNED", "value": None, "params": {"lr": 0.5, "hidden": 8}, "epochs": 1},
              {"number": 3, "state": "FAIL", "params": {"lr": 0.9}}]  # keys may be missing
    (folder / "study.json").write_text(json.dumps({
        "task": "example.sine", "direction": "minimize", "metric": "val/loss",
        "best": {"number": 1, "value": 0.1, "params": {"lr": 0.02, "hidden": 16}}, "trials": trials}))
    return folder


@pytest.fixture(scope="module")
def cv(runs, tmp_path_factory):
    """A folder as ``dlguide cv`` writes it: fold runs and cv.json."""
    folder = tmp_path_factory.mktemp("cv")
    copy_run(runs["sine-a"], folder / "fold_0")
    copy_run(runs["sine-b"], folder / "fold_1")
    (folder / "cv.json").write_text(json.dumps({
        "task": "example.sine", "folds": 2, "repeats": 1,
        "metrics": {"test/mae": {"mean": 0.25, "std": 0.05, "ci95": [0.2, 0.3], "values": [0.2125, 0.2875]}}}))
    return folder


class Page(HTMLParser):
    """What a test reads of the report: images, links, ids, sections, and tables as cells
    (text, title attribute), each table filed under the section it is in."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.titles: dict[str, str] = {}  # section id -> its heading
        self.tables: list[tuple[str, list[list[tuple[str, str]]]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.heading: list[str] | None = None
        self.cell: tuple[list[str], str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section":
            self.stack.append(a["id"])
        elif tag in ("h2", "h3", "h4") and self.stack and self.stack[-1] not in self.titles:
            self.heading = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "table":
            self.tables.append((self.stack[-1] if self.stack else "", []))
        elif tag == "tr":
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self.cell = ([], a.get("title", ""))

    def handle_endtag(self, tag):
        if tag == "section":
            self.stack.pop()
        elif tag in ("h2", "h3", "h4") and self.heading is not None:
            self.titles[self.stack[-1]] = "".join(self.heading)
            self.heading = None
        elif tag in ("td", "th") and self.cell is not None:
            self.tables[-1][1][-1].append(("".join(self.cell[0]).strip(), self.cell[1]))
            self.cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self.heading is not None:
            self.heading.append(data)
        if self.cell is not None:
            self.cell[0].append(data)

    def section(self, title: str) -> str:
        return next(i for i, t in self.titles.items() if title in t)

    def table(self, section: str, *header: str) -> list[list[tuple[str, str]]]:
        """The rows (header row included) of the table in ``section`` whose header starts so."""
        for where, rows in self.tables:
            if where == self.section(section) and tuple(c[0] for c in rows[0][:len(header)]) == header:
                return rows
        raise AssertionError(f"no table {header} in {section}")


def report(paths, out: Path, title: str = "T") -> tuple[str, Page]:
    write_report([str(p) for p in paths], out, title=title)
    text = out.read_text(encoding="utf-8")
    return text, Page(text)


def check_self_contained(text: str, page: Page) -> None:
    assert "http://" not in text.lower() and "https://" not in text.lower()
    assert "<script" not in text.lower()
    assert not any(f"&lt;{tag}" in text for tag in ("ul", "li", "a ", "table", "p>", "div", "figure"))  # markup
    assert page.images
    for image in page.images:
        prefix, _, data = image["src"].partition(",")
        assert prefix == "data:image/png;base64", image["src"][:60]
        assert base64.b64decode(data, validate=True).startswith(PNG_MAGIC)
    assert all(link.startswith("#") and link[1:] in page.ids for link in page.links)


def test_report_of_runs_study_and_cv(runs, study, cv, tmp_path):
    out = tmp_path / "new" / "folder" / "report.html"  # its folder is made
    text, page = report([runs["sine-a"], runs["sine-b"], runs["digits"], study, cv], out, title="Sine & <co>")
    check_self_contained(text, page)
    assert "<title>Sine &amp; &lt;co&gt;</title>" in text
    assert not list(out.parent.glob(".*.tmp"))  # written through a temporary file, renamed

    # a run: the final metrics, one column per split, the full value on hover
    final = json.loads((runs["sine-a"] / "metrics.json").read_text())
    rows = page.table(str(runs["sine-a"]), "metric")
    splits = [c[0] for c in rows[0][1:]]
    cells = {(row[0][0], split): cell for row in rows[1:] for split, cell in zip(splits, row[1:])}
    for key, value in final.items():
        if key != "best_epoch":
            split, name = key.split("/", 1)
            assert cells[(name, split)] == (f"{value:.5g}", repr(value))
    assert f"best epoch {final['best_epoch']} of 2" in "".join(page.text)
    config = {r[0][0]: r[1][0] for r in page.table(str(runs["sine-a"]), "key")[1:]}
    assert config["task"] == "example.sine" and config["samples"] == "256" and config["hidden"] == "8"

    # the digits run's pictures, captioned with their file names
    captions = [image["alt"] for image in page.images]
    for name in ("learning_curves.png", "confusion_matrix.png", "misclassified.png", "optimization_history.png"):
        assert name in captions

    # the two sine runs side by side, and compare's verdict on them
    side = page.table("comparison: example.sine", "metric", str(runs["sine-a"]), str(runs["sine-b"]))
    assert [r[0][0] for r in side[1:]] == list(final)
    verdict = page.table("comparison: example.sine", "B vs A")
    assert verdict[1][0][0] == f"{runs['sine-b']} vs {runs['sine-a']}"
    assert verdict[1][-1][0] == "no significant difference at alpha 0.05"  # the same seed: the same model

    # the study: best first, pruned and failed after; the best trial's run inside
    trials = page.table(f"study: {study}", "trial", "state", "val/loss")
    assert [(r[0][0], r[1][0]) for r in trials[1:]] == [("1", "COMPLETE"), ("0", "COMPLETE"), ("2", "PRUNED"),
                                                           ("3", "FAIL")]
    assert dict((r[0][0], r[1][0]) for r in page.table(f"study: {study}", "parameter")[1:]) == \
        {"lr": "0.02", "hidden": "16"}
    assert page.table("best trial: trial_0001", "metric")

    # the cv folder: mean, spread, interval; each fold
    summary = page.table(f"cv: {cv}", "metric", "mean")
    assert [c[0] for c in summary[1]] == ["test/mae", "0.25", "0.05", "0.2 to 0.3", "2"]
    assert [[c[0] for c in r] for r in page.table(f"cv: {cv}", "fold")[1:]] == [["fold_0", "0.2125"],
                                                                                  ["fold_1", "0.2875"]]


def test_untrusted_strings_are_escaped(runs, tmp_path):
    run = copy_run(runs["sine-a"], tmp_path / "evil")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["dataset"] = "<script>alert('x')</script>"
    config["<b>key</b>"] = {"nested": '"><img src=x onerror=alert(1)>'}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(run / "learning_curves.png", run / "<i>named&.png")
    (run / "fake.png").write_text("<svg onload=alert(1)>")  # not a PNG: named, not embedded
    (run / "elsewhere.png").symlink_to(runs["digits"] / "confusion_matrix.png")  # links are not followed
    text, page = report([run], tmp_path / "report.html")
    check_self_contained(text, page)
    assert "<script>alert" not in text and "<i>named" not in text and "<b>key" not in text and "<img src=x" not in text
    assert all(set(image) == {"src", "alt"} for image in page.images)
    rows = {r[0][0]: r[1][0] for r in page.table("evil", "key")[1:]}
    assert rows["dataset"] == "<script>alert('x')</script>"  # shown as text
    assert rows["<b>key</b>.nested"] == '"><img src=x onerror=alert(1)>'
    assert "&lt;i&gt;named&amp;.png" in text
    assert [image["alt"] for image in page.images] == ["learning_curves.png", "<i>named&.png"]
    skipped = next(t for t in page.text if "not shown" in t)
    assert "fake.png" in skipped and "elsewhere.png" in skipped


def test_unfinished_and_nested_runs(runs, tmp_path):
    run = copy_run(runs["sine-a"], tmp_path / "gan")
    (run / "metrics.json").unlink()
    (run / "learning_curves.png").unlink()  # drawn again from metrics.jsonl
    samples = run / "samples"
    samples.mkdir()
    png = (runs["digits"] / "confusion_matrix.png").read_bytes()
    for epoch in range(40):
        (samples / f"epoch_{epoch:03d}.png").write_bytes(png)
    copy_run(runs["sine-b"], run / "classifier")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({**r, "val/$\\frac$": 1.0}) + "\n" for r in rows)
                                       + '{"epoch": 3, "train/lo')  # a name matplotlib cannot typeset; a torn row
    text, page = report([run], tmp_path / "report.html")
    check_self_contained(text, page)
    words = "".join(page.text)
    assert "unfinished" in page.titles[page.section("gan")]  # the badge
    assert "unfinished: 2 epochs logged, no metrics.json yet" in words
    captions = [image["alt"] for image in page.images]
    assert captions[0] == "drawn from metrics.jsonl"
    shown = [c for c in captions if c.startswith("samples/")]
    assert len(shown) == MAX_PICTURES and shown[0] == "samples/epoch_000.png" and shown[-1] == "samples/epoch_039.png"
    assert f"{MAX_PICTURES} of 40 pictures shown" in words
    nested = page.section("classifier")
    assert f"#{nested}" in page.links and page.table("classifier", "metric")


def test_study_json_as_tune_writes_it(runs, tmp_path):
    """_tune.report's shape: the rows under trial_rows (trials is a count), monitor, best.run_dir."""
    folder = tmp_path / "tune"
    copy_run(runs["sine-a"], folder / "trial_0003")
    rows = [{"number": 2, "state": "COMPLETE", "value": 0.5, "epochs": 2, "params": {"lr": 0.1}, "run_dir": "x",
             "error": None, "curve": [[1, 0.7], [2, 0.5]]},
            {"number": 3, "state": "COMPLETE", "value": 0.9, "epochs": 2, "params": {"lr": 0.01},
             "run_dir": "elsewhere/trial_0003", "error": None, "curve": []}]
    (folder / "study.json").write_text(json.dumps({"study": "s", "task": "example.sine", "monitor": "val/r2",
                                                   "direction": "maximize", "trials": 2, "best": rows[1],
                                                   "trial_rows": rows}))
    text, page = report([folder], tmp_path / "report.html")
    trials = page.table("study:", "trial", "state", "val/r2")
    assert [r[0][0] for r in trials[1:]] == ["3", "2"]  # maximized: the highest first
    assert page.table("best trial: trial_0003", "metric")


def test_a_study_still_running(runs, tmp_path):
    copy_run(runs["sine-a"], tmp_path / "study" / "trial_0000")  # no study.json yet
    text, page = report([tmp_path / "study"], tmp_path / "report.html")
    assert "no study.json yet (still running?); 1 trial_* runs have finished" in "".join(page.text)


def test_spread_keeps_first_and_last():
    items = [Path(str(i)) for i in range(10)]
    assert spread(items, 4) == [Path("0"), Path("3"), Path("6"), Path("9")]
    assert spread(items, 1) == [Path("9")] and spread(items, 0) == [] and spread(items[:3], 5) == items[:3]


def test_runs_over_different_data_are_not_compared(runs, tmp_path):
    other = dlguide.run_task("example.sine", overrides=["epochs=1", "samples=200", "hidden=8"], out=tmp_path / "other",
                             progress="none").run_dir
    text, page = report([runs["sine-a"], other], tmp_path / "report.html")
    reason = next(t for t in page.text if t.startswith("not compared: "))
    assert "different data" in reason and "\n" not in reason
    assert page.table("comparison: example.sine", "metric", str(runs["sine-a"]), str(other))


@pytest.mark.parametrize("case", ["missing", "file", "plain folder", "out is a folder", "out under a file"])
def test_bad_input_is_one_line_exit_2(runs, tmp_path, case):
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.txt").write_text("x")
    path, out, expected = {
        "missing": (tmp_path / "nope", tmp_path / "r.html", "not found"),
        "file": (tmp_path / "file.txt", tmp_path / "r.html", "is a file"),
        "plain folder": (tmp_path / "plain", tmp_path / "r.html", "none of config.yaml, study.json, cv.json"),
        "out is a folder": (runs["sine-a"], tmp_path / "plain", "is a folder"),
        "out under a file": (runs["sine-a"], tmp_path / "file.txt" / "r.html", "cannot create the folder"),
    }[case]
    with pytest.raises(dlguide.UsageError, match=expected):
        write_report([path], out)
    res = run_cli("report", path, "--out", out)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and expected in res.stderr and res.stderr.startswith("dlguide: error: ")
    assert not (tmp_path / "r.html").exists()


def test_command_writes_the_file(runs, tmp_path):
    res = run_cli("report", runs["sine-a"], "--out", tmp_path / "r.html", "--title", "one run")
    assert res.returncode == 0, res.stderr
    assert "<title>one run</title>" in (tmp_path / "r.html").read_text()


# -- in a real browser ------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_picture_renders_in_chromium(runs, study, cv, tmp_path):
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium package: apt-get install -y chromium")
    out = tmp_path / "report.html"
    _, page = report([runs["sine-a"], runs["sine-b"], runs["digits"], study, cv], out, title="Sine & <co>")
    with open(tmp_path / "chromium.log", "w") as log:
        browser = Browser(CHROMIUM, tmp_path / "profile", log)
        try:
            browser.open(out.as_uri())
            deadline = time.monotonic() + WAIT_S
            loaded = f"location.href === {json.dumps(out.as_uri())} && document.readyState === 'complete'"
            while not browser.js(loaded):  # the new tab starts at about:blank
                assert time.monotonic() < deadline, "the report never finished loading"
                time.sleep(0.1)
            assert browser.js("document.title") == "Sine & <co>"
            sizes = browser.js("Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt])")
            assert len(sizes) == len(page.images)
            assert all(complete and width > 0 for complete, width, _ in sizes), sizes
            # the table of contents leads to every section
            assert browser.js("Array.from(document.querySelectorAll('nav a')).every("
                              "a => document.getElementById(a.hash.slice(1)) !== null)")
        finally:
            browser.close()
