"""The web page's time per image against test.py's, for one model (and the page's screenshot for docs/app.md).

python bench/app_timing.py --opt CONF --model_path CKPT --input LOW_DIR [--n 5] [--port 7899] [--device cpu]
                           [--also "--opt CONF2 --model_path CKPT2 ..."] [--screenshot docs/app.png] [--json out.json]

1. test.py on the first N images (one process, as a user runs it): wall seconds / N, and the same for 1 image, so
   the start-up (imports, model build) and the marginal seconds per image are both reported.
2. app.py started as a user starts it with the same --opt/--model_path; each image sent to its `enhance` API with
   gradio_client (round trip: upload, enhance, PNG download); every result must equal test.py's bytes.
3. With --screenshot: headless Chromium uploads the first image through the page, ticks every loaded model (--also
   loads more into the page, not timed) and presses Enhance (the steps of tests/test_app.py), then saves the page
   (palette PNG, kept under 300 KB).
Run it on a quiet machine: timings taken while other jobs share the CPU are not comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _test_py(args, inputs: Path, out: Path) -> float:
    cmd = [sys.executable, str(ROOT / "test.py"), "--opt", args.opt, "--model_path", args.model_path, "--input",
           str(inputs), "--out", str(out)] + (["--device", args.device] if args.device else [])
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def _wait_for(url: str, proc, timeout: float = 600.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"app.py did not answer at {url} within {timeout:.0f} s")


def _screenshot(url: str, image: Path, path: Path) -> None:
    from PIL import Image
    from tests import app_browser as ab
    drv = ab.chromium()
    try:
        ab.open_page(drv, url)
        from selenium.webdriver.common.by import By
        for box in drv.find_elements(By.CSS_SELECTOR, "#models input[type=checkbox]"):
            if not box.is_selected():
                box.click()
        ab.upload_and_press(drv, image)
        ab.status_line(drv, "done: ", timeout=600)
        time.sleep(2)    # let the slider and gallery images finish loading
        raw = Path(tempfile.mkdtemp(prefix="app_shot_")) / "page.png"
        if not drv.save_screenshot(str(raw)):
            raise SystemExit("the browser could not save its screenshot")
    finally:
        drv.quit()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(raw).convert("RGB").quantize(colors=256).save(path, optimize=True)
    shutil.rmtree(raw.parent)
    print(f"screenshot: {path} ({path.stat().st_size / 1024:.0f} KB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opt", required=True)
    ap.add_argument("--model_path", required=True)
    ap.add_argument("--input", required=True, help="folder of low-light images (the first --n are used)")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--port", type=int, default=7899)
    ap.add_argument("--device")
    ap.add_argument("--also", default="", help="more app.py arguments (other models) for the screenshot")
    ap.add_argument("--screenshot", help="save the page's screenshot here (PNG)")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)
    from data.image_io import list_images
    from options.options import load_options
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="app_timing_"))
    images = list_images(args.input)[:args.n]
    if len(images) < 2:
        raise SystemExit("--input needs at least 2 images")
    (work / "in").mkdir()
    (work / "in1").mkdir()
    for p in images:
        shutil.copy(p, work / "in" / p.name)
    shutil.copy(images[0], work / "in1" / images[0].name)

    t_all = _test_py(args, work / "in", work / "out")
    t_one = _test_py(args, work / "in1", work / "out1")
    marginal = (t_all - t_one) / (len(images) - 1)

    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(ROOT / "app.py"), "--opt", args.opt, "--model_path", args.model_path, "--port",
           str(args.port)] + (["--device", args.device] if args.device else []) + shlex.split(args.also)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}/"
    try:
        startup = _wait_for(url, proc)
        client = Client(url, verbose=False)
        label = load_options(args.opt)["name"]
        rounds = []
        for p in images:
            start = time.perf_counter()
            got = client.predict(handle_file(str(work / "in" / p.name)), label, None, api_name="/enhance")
            rounds.append(time.perf_counter() - start)
            if Path(got).read_bytes() != (work / "out" / f"{p.stem}.png").read_bytes():
                raise SystemExit(f"{p.name}: the page's PNG differs from test.py's")
        if args.screenshot:
            _screenshot(url, work / "in" / images[0].name, Path(args.screenshot))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    res = {"model": args.opt, "images": len(images), "size": None, "device": args.device or "auto",
           "test_py_wall_s_per_image": t_all / len(images), "test_py_startup_s": t_one - marginal,
           "test_py_marginal_s_per_image": marginal, "page_startup_s": startup,
           "page_api_s_per_image_mean": statistics.mean(rounds),
           "page_api_s_per_image_after_first": statistics.mean(rounds[1:]), "page_api_first_s": rounds[0],
           "cpu_threads": os.environ.get("OMP_NUM_THREADS", "default")}
    from data.image_io import read_rgb
    res["size"] = "x".join(map(str, read_rgb(images[0]).shape[:2]))
    for k, v in res.items():
        print(f"{k:36s} {v:.3f}" if isinstance(v, float) else f"{k:36s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
