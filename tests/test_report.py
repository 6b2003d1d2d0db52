"""Measure.py --html: the comparison page's structure (html.parser), its numbers against an independent
computation, and the page rendered by a real headless Chromium (tables, images, sorting, synchronised zoom)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio as sk_psnr

import Measure

NAMES = ("a1", "b2", "c10")
LABELS = ("gain", "gamma")


def _write(path: Path, rgb: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


@pytest.fixture()
def folders(tmp_path):
    """gt/, low/ and two methods (A: gain, B: gamma) of three 72x104 crops of skimage photos."""
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]
    root = tmp_path / "data"
    for name, ph in zip(NAMES, photos):
        gt = ph[40:112, 60:164]
        low = (gt.astype(np.float64) * 0.15).astype(np.uint8)
        _write(root / "gt" / f"{name}.png", gt)
        _write(root / "low" / f"{name}.png", low)
        _write(root / "A" / f"{name}.png", np.clip(low * 5.5, 0, 255).astype(np.uint8))
        _write(root / "B" / f"{name}.png", (255 * (low / 255.0) ** 0.4).astype(np.uint8))
    return root


def _measure(root: Path, out: Path, *extra):
    argv = ["--gt", str(root / "gt"), "--pred", str(root / "A"), "--pred", str(root / "B"),
            "--label", LABELS[0], "--label", LABELS[1], "--input", str(root / "low"),
            "--html", str(out / "report.html"), "--csv", str(out / "m.csv"), "--json", str(out / "m.json"),
            "--no-progress", *extra]
    return Measure.main(argv)


class _Page(HTMLParser):
    """Collects tables (rows of cell texts and attributes), image sources, scripts and external references."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.scripts, self.links, self.strips = {}, [], [], [], []
        self._table = self._row = self._cell = None
        self._in_script = False
        self.protocol = None
        self._in_protocol = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"text": "", **a}
            self._row.append(self._cell)
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag == "script":
            self._in_script = True
            if "src" in a:
                self.links.append(a["src"])
        elif tag == "link":
            self.links.append(a.get("href"))
        elif tag == "section" and "strip" in a.get("class", ""):
            self.strips.append({"id": a.get("id"), "tiles": []})
        elif tag == "figure" and self.strips:
            self.strips[-1]["tiles"].append(a.get("class", ""))
        elif tag == "p" and a.get("id") == "protocol":
            self._in_protocol = True
            self.protocol = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "script":
            self._in_script = False
        elif tag == "p":
            self._in_protocol = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_script:
            self.scripts.append(data)
        if self._in_protocol:
            self.protocol += data


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _rgb(path):
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_report_structure_numbers_and_per_method_files(folders, tmp_path):
    out = tmp_path / "out"
    assert _measure(folders, out) == 0
    page = _parse(out / "report.html")

    # per-method CSV/JSON next to each other, none overwritten
    for label in LABELS:
        assert (out / f"m_{label}.csv").is_file() and (out / f"m_{label}.json").is_file()
    assert not (out / "m.csv").exists() and not (out / "m.json").exists()

    # the protocol line
    assert page.protocol.startswith("protocol: PSNR uint8 RGB") and "SSIM skimage_rgb" in page.protocol

    # summary: one row per method, mean and std of PSNR equal an independent skimage computation
    summary = page.tables["summary"]
    assert [c["text"] for c in summary[0]][:3] == ["method", "PSNR ↑ mean ± std", "SSIM ↑ mean ± std"]
    assert [r[0]["text"] for r in summary[1:]] == list(LABELS)
    for label, method, row in zip(LABELS, "AB", summary[1:]):
        ps = [sk_psnr(_rgb(folders / "gt" / f"{n}.png"), _rgb(folders / method / f"{n}.png")) for n in NAMES]
        assert float(row[1]["data-v"]) == pytest.approx(np.mean(ps), abs=1e-9)
        assert row[1]["text"].split("±")[1].strip() == f"{np.std(ps):.3f}"
        assert row[-1]["text"] == str(len(NAMES))
        js = json.loads((out / f"m_{label}.json").read_text())
        assert js["label"] == label and js["std"]["psnr"] == pytest.approx(np.std(ps), abs=1e-12)

    # per-image table: natural order of names, every method's value equals its own CSV
    per = page.tables["per-image"]
    assert [r[0]["text"] for r in per[1:]] == [f"{n}.png" for n in NAMES]
    head = [c["text"] for c in per[0]]
    assert head[1:5] == ["gainPSNR ↑", "gammaPSNR ↑", "gainSSIM ↑", "gammaSSIM ↑"]
    for j, label in enumerate(LABELS):
        rows = list(csv.DictReader((out / f"m_{label}.csv").read_text().splitlines()[1:]))
        for r, tr in zip(rows, per[1:]):
            assert float(tr[1 + j]["data-v"]) == pytest.approx(float(r["psnr"]), abs=1e-12)
            assert float(tr[3 + j]["data-v"]) == pytest.approx(float(r["ssim"]), abs=1e-12)
    # the best method per image and metric is marked
    for tr in per[1:]:
        a, b = float(tr[1]["data-v"]), float(tr[2]["data-v"])
        assert ("best" in tr[1].get("class", "")) == (a > b) and ("best" in tr[2].get("class", "")) == (b > a)

    # strips: input, the methods in order, reference; sources are relative paths to the real files
    assert len(page.strips) == len(NAMES)
    for s in page.strips:
        assert [t.split()[-1] for t in s["tiles"]] == ["input", "method", "method", "reference"]
    assert len(page.imgs) == 4 * len(NAMES)
    for src in page.imgs:
        assert not src.startswith(("data:", "http:", "https:", "/", "file:"))
        assert (out / unquote(src)).resolve().is_file()
    first = [(out / unquote(s)).resolve() for s in page.imgs[:4]]
    assert first == [(folders / d / "a1.png").resolve() for d in ("low", "A", "B", "gt")]

    # self-contained: one inline script, no external script/style/link
    assert page.links == [] and len(page.scripts) == 1 and "addEventListener" in page.scripts[0]


def test_report_inline_images_and_crop_border(folders, tmp_path):
    out = tmp_path / "inline"
    assert _measure(folders, out, "--inline-images", "--crop-border", "4") == 0
    page = _parse(out / "report.html")
    assert all(s.startswith("data:image/png;base64,") for s in page.imgs) and len(page.imgs) == 4 * len(NAMES)
    assert "crop border 4 px per side" in page.protocol


def test_single_pred_keeps_its_file_names(folders, tmp_path):
    out = tmp_path / "single"
    rc = Measure.main(["--gt", str(folders / "gt"), "--pred", str(folders / "A"), "--csv", str(out / "m.csv"),
                       "--json", str(out / "m.json"), "--html", str(out / "r.html"), "--no-progress"])
    assert rc == 0 and (out / "m.csv").is_file() and (out / "m.json").is_file()
    page = _parse(out / "r.html")
    assert [r[0]["text"] for r in page.tables["summary"][1:]] == ["A"]  # default label: the folder name
    assert [t.split()[-1] for t in page.strips[0]["tiles"]] == ["method", "reference"]  # no --input


def test_label_count_mismatch_is_one_line_error(folders, capsys):
    rc = Measure.main(["--gt", str(folders / "gt"), "--pred", str(folders / "A"), "--pred", str(folders / "B"),
                       "--label", "only-one", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "2 --pred folder(s) but 1 --label(s)" in err


def test_same_folder_names_need_labels(folders, tmp_path, capsys):
    twin = tmp_path / "other" / "A"
    shutil.copytree(folders / "A", twin)
    rc = Measure.main(["--gt", str(folders / "gt"), "--pred", str(folders / "A"), "--pred", str(twin),
                       "--no-progress"])
    assert rc == 2 and "share the label 'A'" in capsys.readouterr().err


def test_input_folder_missing_an_image_is_an_error(folders, tmp_path, capsys):
    (folders / "low" / "b2.png").unlink()
    assert _measure(folders, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "--input folder" in err and "b2.png" in err


# ------------------------------------------------------------------------------------------ real browser
def _browser():
    for name in (os.environ.get("LLFLOW_CHROMIUM"), "chromium-headless-shell", "chromium", "chromium-browser",
                 "google-chrome", "headless_shell"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _run_browser(exe, tmp_path, url, *args):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chrome-profile'}", "--virtual-time-budget=5000", *args, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


# Appended to a copy of the page: sorts by gamma's PSNR (two clicks: descending) and moves the pointer over the
# second image of the first strip, so the dumped DOM shows what the page's own script did.
_DRIVER = """<script>
(function(){
  var th = document.querySelectorAll('#per-image thead th')[2];
  th.click(); th.click();
  var strip = document.querySelector('.strip'), img = strip.querySelectorAll('.view img')[1];
  function go(){
    var r = img.getBoundingClientRect();
    img.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + 0.25 * r.width, clientY: r.top + 0.75 * r.height,
                                                   bubbles: true}));
    document.body.dataset.driven = 'yes';
  }
  if (img.complete) go(); else img.addEventListener('load', go);
})();
</script>"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(folders, tmp_path):
    exe = _browser()
    if exe is None:
        pytest.skip("no Chromium binary (apt-get install chromium-headless-shell, or set LLFLOW_CHROMIUM)")
    out = tmp_path / "out"
    assert _measure(folders, out) == 0
    page = out / "report.html"

    # 1) the page as rendered: a screenshot that is not blank and shows the images
    shot = tmp_path / "report.png"
    _run_browser(exe, tmp_path, page.as_uri(), "--window-size=1200,1400", f"--screenshot={shot}")
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (1400, 1200)
    assert img.std() > 20  # text, tables and photos, not a blank page
    saved = os.environ.get("LLFLOW_REPORT_SCREENSHOT")
    if saved:
        shutil.copy(shot, saved)
    # 2) the DOM after the page's script ran and a driver sorted the table and hovered an image
    driven = out / "driven.html"
    driven.write_text(page.read_text(encoding="utf-8").replace("</body>", _DRIVER + "</body>"), encoding="utf-8")
    dom = _run_browser(exe, tmp_path, driven.as_uri(), "--window-size=1200,1400", "--dump-dom")
    assert 'data-ready="yes"' in dom and 'data-driven="yes"' in dom
    parsed = _Page()
    parsed.feed(dom)
    per = parsed.tables["per-image"]
    gamma_psnr = [float(r[2]["data-v"]) for r in per[1:]]
    assert gamma_psnr == sorted(gamma_psnr, reverse=True) and len(gamma_psnr) == len(NAMES)
    assert per[0][2].get("aria-sort") == "descending"
    # every zoom pane of the first strip shows the same crop position of its own image, magnified 4x
    first = dom.split('class="strip"')[1].split('class="strip"')[0]
    zooms = re.findall(r'class="zoom"[^>]*style="([^"]*)"', first) or re.findall(r'style="([^"]*)"[^>]*class="zoom"',
                                                                                 first)
    assert len(zooms) == 4
    pos = {re.search(r"background-position: ([^;]+);", z).group(1) for z in zooms}
    sizes = {re.search(r"background-size: ([^;]+);", z).group(1) for z in zooms}
    assert len(pos) == 1 and sizes == {"416px 288px"}  # 104x72 images at zoom 4
    x, y = (float(v.replace("px", "")) for v in pos.pop().split())
    # The pane is 258x258 CSS px (260 px tile less its 1 px border); the crop is centred on the pointer at
    # (0.25, 0.75) of the 416x288 magnified image and clamped inside it: x = -clamp(104 - 129, 0, 158) = 0,
    # y = -clamp(216 - 129, 0, 30) = -30 (without the hover it would stay centred: -79 px, -15 px).
    assert (x, y) == (0.0, -30.0)


def test_no_reference_report_has_no_reference_tile(tmp_path):
    """--no-ref niqe without --gt: NIQE columns only, strips of the methods alone."""
    from utils.niqe import niqe
    img = skimage.data.coffee()[:96, :192]
    for d, f in (("A", 1.0), ("B", 0.6)):
        _write(tmp_path / d / "x.png", (img * f).astype(np.uint8))
    out = tmp_path / "nr"
    assert Measure.main(["--pred", str(tmp_path / "A"), "--pred", str(tmp_path / "B"), "--no-ref", "niqe",
                         "--html", str(out / "r.html"), "--no-progress"]) == 0
    page = _parse(out / "r.html")
    assert [c["text"] for c in page.tables["summary"][0]] == ["method", "NIQE ↓ mean ± std", "images"]
    want = [niqe(_rgb(tmp_path / d / "x.png")) for d in "AB"]
    assert [float(r[1]["data-v"]) for r in page.tables["summary"][1:]] == pytest.approx(want, abs=1e-12)
    assert [t.split()[-1] for t in page.strips[0]["tiles"]] == ["method", "method"]
    assert page.protocol.startswith("protocol: no reference; NIQE")
