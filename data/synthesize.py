"""Low-light images from a folder of normal-light images: the input check, the output check, the per-image random
generator and the physics run behind ``python tools/synthesize.py`` (whose help describes the command).
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from data.image_io import IMAGE_EXTENSIONS, list_images, read_rgb, write_rgb
from data.synthesis.physics import PhysicsConfig, synthesize
from utils.errors import ImageError, OptionError

log = logging.getLogger("lowlight_flow")
DEFAULT_PHYSICS = Path(__file__).resolve().parents[1] / "confs" / "synthesis" / "physics_LOL.yml"


def list_inputs(folder) -> list[Path]:
    """The images of folder (natural order), each decoded once to check it; other files are skipped with a warning."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageError(f"{d}: --input folder not found")
    others = sorted(f.name for f in d.iterdir()
                    if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in IMAGE_EXTENSIONS)
    if others:
        more = f" ... (+{len(others) - 5} more)" if len(others) > 5 else ""
        log.warning("skipping %d non-image file(s) in %s: %s%s", len(others), d, ", ".join(others[:5]), more)
    files = list_images(d)
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ImageError(f"{d}: {stems[f.stem].name} and {f.name} share the stem '{f.stem}'; "
                             f"both would be written to {f.stem}.png")
        stems[f.stem] = f
        read_rgb(f)  # raises ImageError naming the file (16-bit, transparent, undecodable)
    return files


def check_out(files: list[Path], out: Path, overwrite: bool) -> int:
    """How many of the files this run writes already exist in out; refuses (OptionError) unless overwrite."""
    existing = [f.stem + ".png" for f in files if (out / f"{f.stem}.png").exists()]
    if existing and not overwrite:
        raise OptionError(f"--out {out} already holds {len(existing)} of the {len(files)} files this run writes "
                          f"(e.g. {existing[0]}); pass --overwrite to replace them or choose another folder")
    if existing:
        log.warning("--overwrite: %d existing file(s) in %s will be replaced", len(existing), out)
    return len(existing)


def image_rng(seed: int, stem: str) -> np.random.Generator:
    """The generator of one image: a function of (seed, file stem) only."""
    return np.random.default_rng([int(seed) % 2**63, zlib.crc32(stem.encode("utf-8"))])


def run_physics(cfg: PhysicsConfig, seed: int, files: list[Path], out: Path) -> None:
    """Synthesise every file into out/<stem>.png; warns with the count of existing files it replaced by others."""
    from tqdm import tqdm

    changed = 0
    for f in tqdm(files, desc="synthesize", unit="img"):
        rng = image_rng(seed, f.stem)
        low = synthesize(read_rgb(f), cfg.sample(rng), rng)
        target = out / f"{f.stem}.png"
        if target.exists():
            try:
                changed += not np.array_equal(read_rgb(target), low)
            except ImageError:
                changed += 1
        write_rgb(target, low)
    if changed:
        log.warning("replaced %d existing file(s) in %s with different images", changed, out)


if __name__ == "__main__":
    from utils.cli import moved_command
    moved_command("data.synthesize", "synthesize")
