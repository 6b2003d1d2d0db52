"""One self-contained HTML page comparing methods on the same images (``Measure.py --html``).

The page needs no network and nothing outside itself but the images: they are linked by paths relative to the
page's folder (or embedded as data URIs with ``inline=True``; formats a browser cannot show, e.g. TIFF, are always
embedded as PNG). It holds: the protocol line; a summary table (mean and standard deviation of every metric per
method, image count); a per-image table of every method's values that sorts by any column (click a header); and,
per image, a strip input | methods | reference where hovering over any image shows the same magnified crop under
every image of the strip (click to keep the crop in place, click again to follow the pointer).
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import quote

import cv2
import numpy as np

from utils.errors import ImageError
from utils.metrics import HIGHER_IS_BETTER, MetricAggregator, Protocol

# file types Chromium, Firefox and Safari all display in <img>
_BROWSER_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
                  ".webp": "image/webp", ".gif": "image/gif"}
_TITLES = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "niqe": "NIQE"}
_DIGITS = {"psnr": 3, "ssim": 4, "lpips": 4, "niqe": 4}


@dataclass
class MethodResult:
    """One method: its label, folder, per-image metrics and the prediction file of every image (keyed by stem)."""
    label: str
    pred_dir: Path
    agg: MetricAggregator
    files: Dict[str, Path] = field(default_factory=dict)


@dataclass
class ReportItem:
    """One image row: its display name, stem (the key into MethodResult.files / rows) and optional paths."""
    name: str
    stem: str
    gt: Optional[Path] = None
    input: Optional[Path] = None


def _check_decodes(path: Path, data: bytes) -> None:
    """ImageError naming `path` when its bytes are not an image (the page would show a broken picture)."""
    if path.suffix.lower() == ".gif":  # OpenCV reads no GIF
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
            return
        except (UnidentifiedImageError, OSError, SyntaxError):
            pass
    elif cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None:
        return
    raise ImageError(f"{path}: not a decodable image ({len(data)} bytes); the report would show it as a broken "
                     f"picture")


def _image_src(path: Path, base: Path, inline: bool) -> str:
    """A relative URL from the page's folder, or a data URI (inline, unshowable type, or no relative path).

    Every image is decoded first, linked or embedded: one that is not an image is an ImageError naming it."""
    mime = _BROWSER_TYPES.get(path.suffix.lower())
    if mime is not None:
        data = path.read_bytes()
        _check_decodes(path, data)
    if not inline and mime is not None:
        try:
            rel = os.path.relpath(path.resolve(), base.resolve())
            return quote(Path(rel).as_posix())
        except ValueError:  # another drive (Windows): no relative path exists
            pass
    if mime is None:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        ok, buf = cv2.imencode(".png", img) if img is not None else (False, None)
        if not ok:
            raise ImageError(f"{path}: not a decodable image; cannot be re-encoded as PNG for the report")
        data, mime = buf.tobytes(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(v, key: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{_DIGITS.get(key, 4)}f}"


def _sort_value(v) -> str:
    """data-v attribute: a number JS can parse ('' sorts last)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return "Infinity" if math.isinf(v) and v > 0 else ("-Infinity" if math.isinf(v) else repr(float(v)))


def _best(values: List[Optional[float]], key: str) -> Optional[int]:
    """Index of the best finite-or-inf value (None when fewer than two values exist)."""
    vals = [(i, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if len(vals) < 2:
        return None
    pick = max if HIGHER_IS_BETTER.get(key, True) else min
    return pick(vals, key=lambda t: t[1])[0]


def _arrow(key: str) -> str:
    return "&uarr;" if HIGHER_IS_BETTER.get(key, True) else "&darr;"


def _summary_table(methods: List[MethodResult], keys: List[str]) -> str:
    means = [m.agg.means() for m in methods]
    stds = [m.agg.stds() for m in methods]
    best = {k: _best([mm.get(k) for mm in means], k) for k in keys}
    head = "".join(f'<th data-type="num">{_TITLES.get(k, k)} {_arrow(k)} <span class="sub">mean &plusmn; std</span></th>'
                   for k in keys)
    rows = []
    for i, m in enumerate(methods):
        cells = []
        for k in keys:
            cls = ' class="best"' if best[k] == i else ""
            cells.append(f'<td data-v="{_sort_value(means[i].get(k))}"{cls}>{_fmt(means[i].get(k), k)}'
                         f' <span class="sd">&plusmn; {_fmt(stds[i].get(k), k)}</span></td>')
        rows.append(f'<tr><th scope="row">{html.escape(m.label)}</th>{"".join(cells)}'
                    f'<td data-v="{m.agg.count}">{m.agg.count}</td></tr>')
    return (f'<table id="summary" class="sortable"><thead><tr><th data-type="text">method</th>{head}'
            f'<th data-type="num">images</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _per_image_table(methods: List[MethodResult], items: List[ReportItem], keys: List[str]) -> str:
    rows_by_stem = [{Path(r["name"]).stem: r for r in m.agg.rows} for m in methods]
    head = "".join(f'<th data-type="num">{html.escape(m.label)}<br>{_TITLES.get(k, k)} {_arrow(k)}</th>'
                   for k in keys for m in methods)
    body = []
    for it in items:
        cells = []
        for k in keys:
            vals = [rows_by_stem[j].get(it.stem, {}).get(k) for j in range(len(methods))]
            b = _best(vals, k)
            for j, v in enumerate(vals):
                cls = ' class="best"' if b == j else ""
                cells.append(f'<td data-v="{_sort_value(v)}"{cls}>{_fmt(v, k)}</td>')
        body.append(f'<tr><th scope="row" data-v="{html.escape(it.name)}"><a href="#img-{html.escape(it.stem)}">'
                    f'{html.escape(it.name)}</a></th>{"".join(cells)}</tr>')
    return (f'<table id="per-image" class="sortable"><thead><tr><th data-type="text">image</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _tile(src: str, caption: str, kind: str, metrics: str = "") -> str:
    return (f'<figure class="tile {kind}"><div class="view"><img src="{src}" alt="{html.escape(caption)}" '
            f'decoding="async"><div class="marker"></div></div><div class="zoom" role="img" '
            f'aria-label="magnified crop of {html.escape(caption)}"></div>'
            f'<figcaption>{html.escape(caption)}{metrics}</figcaption></figure>')


def _strips(methods: List[MethodResult], items: List[ReportItem], keys: List[str], base: Path, inline: bool) -> str:
    rows_by_stem = [{Path(r["name"]).stem: r for r in m.agg.rows} for m in methods]
    out = []
    for it in items:
        tiles = []
        if it.input is not None:
            tiles.append(_tile(_image_src(it.input, base, inline), "input", "input"))
        for j, m in enumerate(methods):
            row = rows_by_stem[j].get(it.stem, {})
            vals = " ".join(f"{_TITLES.get(k, k)} {_fmt(row.get(k), k)}" for k in keys if row.get(k) is not None)
            tiles.append(_tile(_image_src(m.files[it.stem], base, inline), m.label, "method",
                               f'<span class="vals">{html.escape(vals)}</span>' if vals else ""))
        if it.gt is not None:
            tiles.append(_tile(_image_src(it.gt, base, inline), "reference", "reference"))
        out.append(f'<section class="strip" id="img-{html.escape(it.stem)}"><h3>{html.escape(it.name)}</h3>'
                   f'<div class="tiles">{"".join(tiles)}</div></section>')
    return "".join(out)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#111;background:#fff}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em}h3{font-size:1em;margin:.2em 0}
.protocol{font-family:ui-monospace,monospace;font-size:12px;background:#f3f3f3;padding:.5em;border-radius:4px}
table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th[scope=row]{text-align:left;font-weight:normal}thead th{background:#eee;cursor:pointer;user-select:none}
thead th[aria-sort=ascending]::after{content:" \\25B2"}thead th[aria-sort=descending]::after{content:" \\25BC"}
td.best{font-weight:bold;background:#e6f4e6}.sd{color:#666;font-size:.9em}.sub{font-weight:normal;font-size:.8em}
.controls{margin:.4em 0}.strip{margin:1em 0;border-top:1px solid #ddd;padding-top:.4em}
.tiles{display:flex;flex-wrap:wrap;gap:10px}.tile{margin:0;width:var(--tile-w,260px)}
.view{position:relative;line-height:0}.view img{width:100%;height:auto;display:block;cursor:crosshair;
 background:#ddd;min-height:40px}
.marker{position:absolute;border:2px solid #e33;pointer-events:none;box-sizing:border-box;display:none}
.zoom{width:100%;aspect-ratio:1;margin-top:4px;background-color:#222;background-repeat:no-repeat;
 image-rendering:pixelated;border:1px solid #999;box-sizing:border-box}
figcaption{font-size:12px;text-align:center}.vals{display:block;color:#444;font-family:ui-monospace,monospace;
 font-size:11px}.locked .marker{border-color:#36f}
"""

_JS = """
(function(){
  // --- sortable tables: click a header; numbers sort numerically (data-v), empty values last ---
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function(th, col){
      th.addEventListener('click', function(){
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function(h){ h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var num = th.dataset.type === 'num', body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(a, b){
          var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          if (x === undefined) x = a.cells[col].textContent;
          if (y === undefined) y = b.cells[col].textContent;
          if (x === '' || y === '') return (x === '') - (y === '');
          var c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
          if (num && isNaN(c)) c = 0;
          return asc ? c : -c;
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  // --- synchronised zoom: one crop position (fractions of the image) per strip, shown under every image ---
  var factorSel = document.getElementById('zoom-factor');
  function factor(){ return parseFloat(factorSel.value) || 4; }
  function show(strip){
    var fx = strip._fx, fy = strip._fy, f = factor();
    strip.querySelectorAll('.tile').forEach(function(tile){
      var img = tile.querySelector('img'), zoom = tile.querySelector('.zoom'), mk = tile.querySelector('.marker');
      var nw = img.naturalWidth, nh = img.naturalHeight;
      if (!nw || !nh) return;
      var zw = zoom.clientWidth, zh = zoom.clientHeight;
      var bw = nw * f, bh = nh * f;  // magnified image size in CSS pixels
      var cx = Math.min(Math.max(fx * bw - zw / 2, 0), Math.max(bw - zw, 0));
      var cy = Math.min(Math.max(fy * bh - zh / 2, 0), Math.max(bh - zh, 0));
      zoom.style.backgroundImage = 'url("' + img.currentSrc.replace(/"/g, '%22') + '")';
      zoom.style.backgroundSize = bw + 'px ' + bh + 'px';
      zoom.style.backgroundPosition = (-cx) + 'px ' + (-cy) + 'px';
      var k = img.clientWidth / nw;  // marker: the crop's outline on the displayed image
      mk.style.display = 'block';
      mk.style.left = (cx / f * k) + 'px'; mk.style.top = (cy / f * k) + 'px';
      mk.style.width = Math.min(zw / f * k, img.clientWidth) + 'px';
      mk.style.height = Math.min(zh / f * k, img.clientHeight) + 'px';
    });
  }
  function place(strip, img, ev){
    var r = img.getBoundingClientRect();
    strip._fx = Math.min(Math.max((ev.clientX - r.left) / r.width, 0), 1);
    strip._fy = Math.min(Math.max((ev.clientY - r.top) / r.height, 0), 1);
    show(strip);
  }
  document.querySelectorAll('.strip').forEach(function(strip){
    strip._fx = 0.5; strip._fy = 0.5;
    strip.querySelectorAll('.view img').forEach(function(img){
      img.addEventListener('mousemove', function(ev){ if (!strip._locked) place(strip, img, ev); });
      img.addEventListener('click', function(ev){
        strip._locked = !strip._locked; strip.classList.toggle('locked', strip._locked); place(strip, img, ev);
      });
      if (img.complete) show(strip); else img.addEventListener('load', function(){ show(strip); });
    });
  });
  factorSel.addEventListener('change', function(){ document.querySelectorAll('.strip').forEach(show); });
  window.addEventListener('resize', function(){ document.querySelectorAll('.strip').forEach(show); });
  document.body.dataset.ready = 'yes';
})();
"""


def render_report(methods: List[MethodResult], items: List[ReportItem], protocol: Protocol, base: Path,
                  inline: bool = False, title: Optional[str] = None) -> str:
    """The page as a string; image links are relative to ``base`` (the page's folder)."""
    keys = [k for k in protocol.metric_keys
            if any(r.get(k) is not None for m in methods for r in m.agg.rows)]
    title = title or "Comparison: " + " vs ".join(m.label for m in methods)
    n = len(items)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="protocol" id="protocol">protocol: {html.escape(protocol.describe())}</p>
<p>{n} image{"s" if n != 1 else ""}; {len(methods)} method{"s" if len(methods) != 1 else ""}. Bold: best per
column. Click a column header to sort.</p>
<h2>Summary</h2>
{_summary_table(methods, keys)}
<h2>Per image</h2>
{_per_image_table(methods, items, keys)}
<h2>Images</h2>
<p class="controls">Hover over an image: every image of its row shows the same magnified crop (click to hold it).
<label>zoom <select id="zoom-factor"><option>2</option><option selected>4</option><option>8</option>
<option>16</option></select></label></p>
{_strips(methods, items, keys, base, inline)}
<script>{_JS}</script>
</body></html>
"""


def write_report(path, methods: List[MethodResult], items: List[ReportItem], protocol: Protocol,
                 inline: bool = False, title: Optional[str] = None) -> Path:
    """Write the comparison page to ``path`` (its folder is created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(methods, items, protocol, out.parent, inline, title)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
