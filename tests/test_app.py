"""The local web page (app.py): its `enhance` API and a real headless browser give test.py's PNG byte for byte.

Needs the optional extra (requirements-app.txt); the browser test also needs Debian's chromium and chromium-driver.
Each skips with the reason when they are missing. tests/app_browser.py drives the browser (bench/app_timing.py takes
docs/app.png with it).
"""
from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.build import MODEL_MODULES, build_network, model_class
from models.checkpoint import save_generator
from options.options import load_options
from utils.cli import call_cli
from utils.registry import MODEL_REGISTRY

import test as test_script

pytestmark = pytest.mark.slow
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio's import: no usage statistics
gr = pytest.importorskip("gradio", reason="optional extra not installed: pip install -r requirements-app.txt")
gradio_client = pytest.importorskip("gradio_client", reason="optional extra not installed: pip install -r "
                                                           "requirements-app.txt")
from engine.webapp import Workbench, load_models  # noqa: E402
from engine.webpage import build_page  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# every demo config of an enhancing `model:` (N2LDiff synthesises low-light images: it enhances nothing)
CONFS = {"LLFlow": "LLFlow/demo_tiny.yml", "GLTG-AFlow": "GLTG-AFlow/demo_tiny.yml",
         "ZMAR-SNFlow": "ZMAR-SNFlow/demo_tiny.yml", "UPT-Flow": "UPT-Flow/demo_tiny.yml",
         "DRBN": "DRBN/demo_tiny.yml", "DRBN-stage2": "DRBN/demo_tiny_stage2.yml"}
NOT_ENHANCERS = {"N2LDiff"}


def _image(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) ** 2 * 120).astype(np.uint8)     # dark, like a low-light photo
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Inputs (a PNG and a JPEG of sizes no model's multiple divides), one fresh checkpoint per demo config, and
    test.py's output for each (family -> {stem: PNG bytes})."""
    d = tmp_path_factory.mktemp("app")
    _image(d / "in/dark.png", 30, 44, 0)
    _image(d / "in/night.jpg", 27, 35, 1)
    (d / "bad").mkdir()
    (d / "bad/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ckpts, expected = {}, {}
    for family, conf in CONFS.items():
        # stage 2 starts from the stage-1 DRBN made just before; its saved file holds both
        sets = [f"path.pretrain_stage1={ckpts['DRBN']}"] if family == "DRBN-stage2" else []
        opt = load_options(ROOT / "confs" / conf, sets)
        torch.manual_seed(0)
        ckpts[family] = d / f"{family}.pth"
        save_generator(build_network(opt)[0], ckpts[family])
        out = d / "test_py" / family
        code = call_cli(test_script.main, ["--opt", str(ROOT / "confs" / conf), "--model_path", str(ckpts[family]),
                                           "--input", str(d / "in"), "--out", str(out), "--device", "cpu"])
        assert code == 0
        expected[family] = {p.stem: p.read_bytes() for p in out.glob("*.png")}
        assert set(expected[family]) == {"dark", "night"}
    return d, ckpts, expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(w):
    """The page with every demo model loaded, served on 127.0.0.1; yields (url, workbench)."""
    d, ckpts, _ = w
    specs = [(ROOT / "confs" / conf, ckpts[family]) for family, conf in CONFS.items()]
    bench = Workbench(load_models(specs, device="cpu"), scratch=d / "scratch")
    page = build_page(bench).queue()
    port = _free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False,
                allowed_paths=[str(bench.scratch)], quiet=True)
    yield f"http://127.0.0.1:{port}/", bench
    page.close()


def _label(family: str) -> str:
    return load_options(ROOT / "confs" / CONFS[family])["name"]


def test_every_enhancing_registered_model_has_a_demo_config_here():
    model_class("LLFlow")   # imports every module that registers a model
    # the project's own methods (tests register toy methods in the same process)
    names = {m for m in MODEL_REGISTRY.keys() if MODEL_REGISTRY.get(m).__module__ in MODEL_MODULES}
    covered = {load_options(ROOT / "confs" / c)["model"] for c in CONFS.values()}
    assert names - NOT_ENHANCERS == covered


@pytest.mark.parametrize("family", list(CONFS))
def test_api_enhance_equals_test_py_byte_for_byte(family, w, server):
    d, _, expected = w
    url, _ = server
    client = gradio_client.Client(url, verbose=False)
    for src in sorted((d / "in").iterdir()):
        got = client.predict(gradio_client.handle_file(str(src)), _label(family), None, api_name="/enhance")
        assert Path(got).read_bytes() == expected[family][src.stem], (family, src.name)


def test_api_bad_image_is_the_one_line_error_and_the_server_keeps_serving(w, server):
    d, _, expected = w
    client = gradio_client.Client(server[0], verbose=False)
    with pytest.raises(Exception) as e:
        client.predict(gradio_client.handle_file(str(d / "bad/broken.png")), _label("LLFlow"), None,
                       api_name="/enhance")
    assert "error: " in str(e.value) and "broken.png: cannot decode image" in str(e.value)
    assert "Traceback" not in str(e.value)
    with pytest.raises(Exception) as e:
        client.predict(gradio_client.handle_file(str(d / "in/dark.png")), "no such model", None, api_name="/enhance")
    assert "error: model 'no such model' is not loaded" in str(e.value)
    got = client.predict(gradio_client.handle_file(str(d / "in/dark.png")), _label("LLFlow"), None,
                         api_name="/enhance")
    assert Path(got).read_bytes() == expected["LLFlow"]["dark"]


def test_a_model_that_does_not_fit_says_so_and_the_next_request_works(w, server, monkeypatch):
    """The allocator's failure inside the network (what a too-large photo gives) is the page's one-line
    out-of-memory message with the tile to use; the next request is served as usual."""
    d, _, expected = w
    url, bench = server
    net = bench.model(_label("DRBN")).enhancer().model

    def fail(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 GB")
    monkeypatch.setattr(net, "enhance", fail)
    client = gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception) as e:
        client.predict(gradio_client.handle_file(str(d / "in/dark.png")), _label("DRBN"), None, api_name="/enhance")
    assert "error: out of memory enhancing a 32x44 (padded HxW) input on cpu: run it in tiles" in str(e.value)
    monkeypatch.undo()
    got = client.predict(gradio_client.handle_file(str(d / "in/dark.png")), _label("DRBN"), None,
                         api_name="/enhance")
    assert Path(got).read_bytes() == expected["DRBN"]["dark"]


def test_synthesised_pair_is_the_cli_synthesiser_and_is_scored(w, server, tmp_path):
    """The pair tab's low image is `python tools/synthesize.py --seed 3`'s for the same photo; enhancing it scores
    the model's PNG against the photo with utils/metrics.py."""
    from data.image_io import read_rgb
    from tools.synthesize import main as synth_main
    from skimage.metrics import peak_signal_noise_ratio
    d, _, _ = w
    _, bench = server
    normal = _image(tmp_path / "normal/photo.png", 32, 40, 5)
    assert call_cli(synth_main, ["--input", str(normal.parent), "--out", str(tmp_path / "low"), "--seed", "3"]) == 0
    normal_png, low_png, params = bench.synthesise(normal, 3)
    assert low_png.read_bytes() == (tmp_path / "low/photo.png").read_bytes()
    assert 0 < params.exposure < 1
    res = bench.enhance([low_png], [_label("DRBN")], gt=read_rgb(normal_png))[0]
    want = peak_signal_noise_ratio(read_rgb(normal_png), read_rgb(res.png))
    assert res.metrics["psnr"] == pytest.approx(want, abs=1e-9)
    assert 0 <= res.metrics["ssim"] <= 1 and res.seconds > 0


def test_browser_upload_enhance_download_and_bad_upload(w, server, tmp_path):
    from tests import app_browser as ab
    d, _, expected = w
    url, _ = server
    try:
        drv = ab.chromium(tmp_path / "profile")
    except ab.BrowserUnavailable as e:
        pytest.skip(str(e))
    from selenium.webdriver.common.by import By
    try:
        ab.open_page(drv, url)
        # a bad upload: the one-line error on the page, no traceback
        ab.upload_and_press(drv, d / "bad/broken.png")
        line = ab.status_line(drv, "error: ")
        assert "broken.png: cannot decode image" in line and "Traceback" not in drv.page_source
        # then, on the same page, a good one is enhanced; its download is test.py's PNG
        ab.clear_uploads(drv)
        ab.upload_and_press(drv, d / "in/dark.png")
        assert "s/image" in ab.status_line(drv, "done: ")
        with urllib.request.urlopen(ab.download_href(drv, "dark.png"), timeout=30) as r:
            assert r.read() == expected["LLFlow"]["dark"]
        # the before/after slider shows the result too
        srcs = [i.get_attribute("src") for i in drv.find_elements(By.CSS_SELECTOR, "#slider img")]
        assert any(s and s.endswith("dark.png") for s in srcs), srcs
        # nothing was requested from anywhere but this page's server
        hosts = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [h for h in hosts if not h.startswith((url, "data:", "blob:"))]
        assert not outside, outside
        assert hosts, "no resource entries: the check above would see nothing"
        _pair_tab(drv, d, tmp_path)
    finally:
        drv.quit()


def test_pair_lpips_with_a_backbone(w, server, shared_dir, tmp_path):
    """With --lpips-backbone the pair's LPIPS is utils/metrics.py's LPIPS of the written PNG against the photo."""
    from data.image_io import read_rgb
    from utils import metrics
    _, bench = server
    backbone = shared_dir / "weights" / "alexnet_features.pth"
    if not backbone.is_file():
        pytest.skip(f"{backbone} not present")
    wb = Workbench(list(bench.models.values()), lpips_backbone=str(backbone), scratch=tmp_path / "s")
    normal_png, low_png, _ = wb.synthesise(_image(tmp_path / "p/photo.png", 64, 64, 3), 1)
    res = wb.enhance([low_png], [_label("DRBN")], gt=read_rgb(normal_png))[0]
    want = metrics.get_lpips_metric(str(backbone))(read_rgb(res.png), read_rgb(normal_png))
    assert res.metrics["lpips"] > 0 and res.metrics["lpips"] == pytest.approx(want, abs=1e-6)
    assert "lpips_note" not in res.metrics


def _pair_tab(drv, d, tmp_path):
    """The second tab: a low-light version of a photo (the CLI synthesiser's), enhanced and scored on the page."""
    from selenium.webdriver.common.by import By
    from skimage.metrics import peak_signal_noise_ratio
    from data.image_io import read_rgb
    from tools.synthesize import main as synth_main
    from tests import app_browser as ab
    photo = _image(tmp_path / "normal/street.png", 32, 48, 9)
    next(b for b in drv.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Synthesise" in b.text).click()
    drv.find_element(By.CSS_SELECTOR, "#normal input[type=file]").send_keys(str(photo))
    ab.wait(lambda: drv.find_elements(By.CSS_SELECTOR, "#normal td.filename[aria-label='street.png']"), 60, "upload")
    seed = drv.find_element(By.CSS_SELECTOR, "#seed input")
    seed.clear()
    seed.send_keys("4")
    drv.find_element(By.ID, "synth-btn").click()
    ab.wait(lambda: "seed 4: exposure" in drv.find_element(By.ID, "s-status").text, 120, "the synthesis")
    href = ab.wait(lambda: [a.get_attribute("href") for a in
                            drv.find_elements(By.CSS_SELECTOR, "#low-file a[download='street.png']")], 60, "low PNG")[0]
    with urllib.request.urlopen(href, timeout=30) as r:
        low = r.read()
    assert call_cli(synth_main, ["--input", str(photo.parent), "--out", str(tmp_path / "low"), "--seed", "4"]) == 0
    assert low == (tmp_path / "low/street.png").read_bytes()
    drv.find_element(By.ID, "score-btn").click()
    ab.wait(lambda: drv.find_element(By.ID, "s-status").text.startswith("done: "), 300, "the scores")
    cells = ab.wait(lambda: [t for c in drv.find_elements(By.CSS_SELECTOR, "#scores tbody td")
                             if (t := (c.get_attribute("textContent") or "").strip())], 60, "the score table")
    src = drv.find_element(By.CSS_SELECTOR, "#s-gallery img").get_attribute("src")
    with urllib.request.urlopen(src, timeout=30) as r:
        (tmp_path / "enhanced.png").write_bytes(r.read())
    want = peak_signal_noise_ratio(read_rgb(photo), read_rgb(tmp_path / "enhanced.png"))
    assert f"{want:.3f}" in cells, (want, cells)


def test_app_cli_wrong_checkpoint_is_one_line(w, capsys):
    """A checkpoint that does not fit its config stops app.py with the CLIs' one-line error (before any page)."""
    import app
    d, ckpts, _ = w
    code = call_cli(app.main, ["--opt", str(ROOT / "confs" / CONFS["LLFlow"]), "--model_path", str(ckpts["DRBN"]),
                               "--port", str(_free_port())])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "DRBN.pth" in lines[0], err[-2000:]


@pytest.mark.parametrize("family", ["LLFlow", "DRBN"])
def test_page_tile_and_dtype_equal_test_py_with_the_same_flags(family, w, server, tmp_path):
    """The page's tile and dtype fields reach the Enhancer exactly as test.py's --tile / --dtype do."""
    d, ckpts, _ = w
    _, bench = server
    conf = str(ROOT / "confs" / CONFS[family])
    out = tmp_path / "t"
    assert call_cli(test_script.main, ["--opt", conf, "--model_path", str(ckpts[family]), "--input", str(d / "in"),
                                       "--out", str(out), "--device", "cpu", "--tile", "16", "--dtype", "bf16"]) == 0
    res = bench.enhance(sorted((d / "in").iterdir()), [_label(family)], None, "16", "bf16")
    assert {r.name: r.png.read_bytes() for r in res} == {p.stem: p.read_bytes() for p in out.glob("*.png")}
    # and they change the output (bf16 is not fp32), so the comparison above sees them
    fp32 = bench.enhance([d / "in/dark.png"], [_label(family)], None, "auto", "fp32")[0]
    assert fp32.png.read_bytes() != (out / "dark.png").read_bytes()


def test_page_dtype_auto_is_test_py_dtype_auto_and_says_what_it_means_here(w, server, tmp_path, monkeypatch):
    """'auto' on the page is test.py's --dtype auto (bf16 with AMX, else fp32), and the field's label says which."""
    import utils.devices
    from engine.webapp import auto_note, dtype_choices
    d, ckpts, _ = w
    _, bench = server
    assert "auto" in dtype_choices("cpu")
    for flags, want in [("", "fp32, CPU without AMX"), (" amx_tile amx_bf16", "bf16, CPU has AMX")]:
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16{flags}\n")
        monkeypatch.setattr(utils.devices, "CPUINFO", str(tmp_path / "cpuinfo"))
        assert auto_note("cpu").startswith(want)
        out = tmp_path / f"t{len(flags)}"
        assert call_cli(test_script.main, ["--opt", str(ROOT / "confs" / CONFS["DRBN"]), "--model_path",
                                           str(ckpts["DRBN"]), "--input", str(d / "in"), "--out", str(out),
                                           "--device", "cpu", "--dtype", "auto"]) == 0
        res = bench.enhance([d / "in/dark.png"], [_label("DRBN")], None, "0", "auto")[0]
        assert res.png.read_bytes() == (out / "dark.png").read_bytes()


def test_old_request_folders_are_pruned(w, server, monkeypatch):
    import engine.webapp
    d, _, expected = w
    _, bench = server
    monkeypatch.setattr(engine.webapp, "KEEP_REQUESTS", 2)
    res = [bench.enhance([d / "in/dark.png"], [_label("DRBN")])[0] for _ in range(3)]
    assert len(list(bench.scratch.glob("*_enhance"))) == 2
    assert not res[0].png.exists() and res[2].png.read_bytes() == expected["DRBN"]["dark"]


def test_page_field_errors_are_one_line(w, server):
    from utils.errors import UserError
    d, _, _ = w
    _, bench = server
    for kwargs, words in [({"tile": "big"}, "tile: expected 'auto'"), ({"tile": "3"}, "inference.tile / --tile"),
                          ({"heat": -1}, "heat"), ({"dtype": "fp16"}, "fp16 needs a CUDA device")]:
        with pytest.raises(UserError, match=words):
            bench.enhance([d / "in/dark.png"], [_label("LLFlow")], **kwargs)
    with pytest.raises(UserError, match="no model"):
        bench.enhance([d / "in/dark.png"], [])


def test_app_cli_port_in_use_is_one_line(w, capsys):
    import app
    d, ckpts, _ = w
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = call_cli(app.main, ["--opt", str(ROOT / "confs" / CONFS["DRBN"]), "--model_path", str(ckpts["DRBN"]),
                                   "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"error: --host 127.0.0.1 --port {port}: cannot listen there" in err, err


def test_app_cli_each_model_path_and_set_belong_to_the_opt_before_them():
    import app
    from utils.errors import OptionError
    a = app.parse_args(["--set", "heat=0.5", "--opt", "a.yml", "--model_path", "a.pth", "--set", "x=1", "--opt",
                        "b.yml", "--set", "y=2", "--set", "z=3", "--port", "9"])
    assert a.models == [["a.yml", "a.pth", ["x=1"]], ["b.yml", None, ["y=2", "z=3"]]]
    assert a.overrides == ["heat=0.5"] and a.port == 9 and a.host == "127.0.0.1"
    with pytest.raises(OptionError, match="--model_path: give it after the --opt"):
        app.parse_args(["--opt", "a.yml", "--model_path", "a.pth", "--model_path", "b.pth"])


def test_app_cli_help_runs_without_a_page():
    p = subprocess.run([os.sys.executable, str(ROOT / "app.py"), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=str(ROOT), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0 and "--model_path" in p.stdout and "127.0.0.1" in p.stdout
