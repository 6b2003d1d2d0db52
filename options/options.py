"""Load, validate and complete YAML options.

- Files are read with `yaml.SafeLoader` (plus `!!python/tuple` read as a list, which the official N2LDiff YAMLs use);
  an official N2LDiff YAML (options/n2ldiff_official.py) is converted to our tree first. `--set a.b.c=value`
  overrides are parsed as YAML scalars/lists.
- Defaults come from options/schema.py (the one place they live); an unknown key anywhere is an error that names the
  dotted key and suggests the closest known one.
- Relative paths are resolved against the current working directory (as the official scripts did), after turning
  Windows separators into '/'. A Windows drive path (`D:\\...`) is kept as written and reported when it is used.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path

import yaml

from utils.errors import OptionError, UnknownNameError

from .n2ldiff_official import convert_official_n2ldiff, is_official_n2ldiff
from .schema import FREE, TOP
from .validate import check_value

PATH_KEYS = {"root", "dataroot_LQ", "dataroot_GT", "dataroot_unpaired", "dataroot_LR", "dataroot_test",
             "dataroot_zeromaps", "model_path", "pretrain_model_G", "experiments_root", "results_root",
             "split_file", "folder", "resume_state", "roots", "pretrain_stage1", "vgg16_features",
             "dataroot_unpaired_LQ", "dataroot_HQ", "synthesis"}


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads `!!python/tuple` (as a list): the official N2LDiff YAMLs write
    `dim_mults: !!python/tuple [...]`. No other Python tag is accepted."""


ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                             lambda loader, node: loader.construct_sequence(node, deep=True))


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, [k for k in known if k != "*"], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _complete(d: dict, schema: dict, where: str, pattern: str | None = None) -> dict:
    """Check `d` against `schema` (known keys, typed values: options/validate.py) and fill the defaults.

    `where` is the dotted key for messages; `pattern` the same with `*` for user-named sections (dataset phases).
    Returns a new dict.
    """
    pattern = where if pattern is None else pattern
    if d is None:
        d = {}
    if not isinstance(d, dict):
        what = f"option '{where}'" if where else "the config"
        raise OptionError(f"{what} must be a mapping of keys, got {_describe_value(d)}")
    out = {}
    join = lambda a, b: f"{a}.{b}" if a else str(b)  # noqa: E731
    if "*" in schema:  # every key is a user-chosen name (dataset phases)
        for k, v in d.items():
            out[k] = _complete(v, schema["*"], join(where, k), join(pattern, "*"))
        return out
    for k, v in d.items():
        path = join(where, k)
        if k not in schema:
            raise UnknownNameError(f"unknown option '{path}'{_suggest(str(k), schema)}")
        sub = schema[k]
        if sub is FREE:
            out[k] = v
        elif not isinstance(sub, dict):
            out[k] = check_value(path, join(pattern, k), v, sub)
        else:
            out[k] = _complete(v, sub, path, join(pattern, k))
    for k, sub in schema.items():
        if k in out or k == "*":
            continue
        if sub is FREE:
            out[k] = None
        elif isinstance(sub, dict):
            out[k] = _complete({}, sub, join(where, k), join(pattern, k))
        else:
            out[k] = copy.deepcopy(sub)
    return out


def _describe_value(v) -> str:
    return f"{type(v).__name__} {str(v)[:40]!r}" if v is not None else "nothing"


def parse_override(item: str):
    """'a.b=1e-4' -> (['a', 'b'], 0.0001). Values are parsed as YAML (so lists and bools work)."""
    if "=" not in item:
        raise OptionError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise OptionError(f"--set has an empty key in '{item}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise OptionError(f"--set {item}: the value is not valid YAML ({yaml_problem(e)}); quote strings that "
                          f"contain ':', '[' or '{{'") from None
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d*\.?\d+([eE][-+]?\d+)", value):
        value = float(value)  # YAML 1.1 reads '5e-4' as a string
    return keys, value


def apply_overrides(raw: dict, overrides) -> dict:
    for item in overrides or []:
        keys, value = parse_override(item)
        d = raw
        for k in keys[:-1]:
            if d.get(k) is None:
                d[k] = {}
            d = d[k]
            if not isinstance(d, dict):
                raise OptionError(f"--set {item}: '{k}' is not a section")
        d[keys[-1]] = value
    return raw


def _fix_numbers(d):
    """YAML 1.1 leaves '5e-4' (no dot) as a string; the official files rely on !!float. Accept both."""
    if isinstance(d, dict):
        return {k: _fix_numbers(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_fix_numbers(v) for v in d]
    if isinstance(d, str) and re.fullmatch(r"[-+]?\d*\.?\d+[eE][-+]?\d+", d.strip()):
        return float(d)
    return d


def normalise_path(p):
    """Relative paths resolve against the CWD; backslash separators become '/'; drive paths are left as they are."""
    if p is None or not isinstance(p, str) or p in ("auto", ""):
        return p
    if re.match(r"^[A-Za-z]:[\\/]", p):
        return p
    p = p.strip().replace("\\", "/")
    return str((Path.cwd() / os.path.expanduser(p)).resolve()) if not os.path.isabs(os.path.expanduser(p)) \
        else os.path.expanduser(p)


def _normalise_paths(d):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            if k in PATH_KEYS and isinstance(v, str):
                out[k] = normalise_path(v)
            elif k in PATH_KEYS and isinstance(v, list):
                out[k] = [normalise_path(x) if isinstance(x, str) else x for x in v]
            else:
                out[k] = _normalise_paths(v)
        return out
    return d


def check_path(path: str | None, key: str, must_exist: bool = True) -> Path:
    """Path of a config key, with one-line errors for missing values, Windows drive paths and absent files."""
    if not path:
        raise OptionError(f"option '{key}' is not set")
    if re.match(r"^[A-Za-z]:[\\/]", path):
        raise OptionError(f"option '{key}' is a Windows path ('{path}'): edit it to a path on this machine")
    p = Path(path)
    if must_exist and not p.exists():
        raise OptionError(f"option '{key}': '{path}' does not exist")
    return p


def yaml_problem(e: yaml.YAMLError) -> str:
    """'line L, column C: problem' of a YAML error (1-based, as editors count)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def read_yaml(path) -> dict:
    """A config file as a dict (ConfigLoader: yaml.SafeLoader plus tuples); missing, unreadable, invalid or empty
    files are OptionErrors."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"config file '{path}' not found" + (" (it is a folder)" if p.is_dir() else ""))
    try:
        with open(p, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=ConfigLoader)
    except yaml.YAMLError as e:
        raise OptionError(f"config file '{path}' is not valid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise OptionError(f"config file '{path}' is not UTF-8 text (byte {e.start}): is it a YAML file?") from None
    except OSError as e:
        raise OptionError(f"config file '{path}' cannot be read: {e.strerror or e}") from None
    if raw is None:
        raise OptionError(f"config file '{path}' is empty")
    if not isinstance(raw, dict):
        raise OptionError(f"config file '{path}' must be a mapping of keys, got {_describe_value(raw)}")
    return raw


def load_options(path: str | os.PathLike | None = None, overrides=None, is_train: bool = False,
                 raw: dict | None = None) -> dict:
    """Read a YAML file (or a dict), apply `--set` overrides, validate every key and fill defaults."""
    if raw is None:
        if path is None:
            raise OptionError("no config given (--opt CONF)")
        raw = read_yaml(path)
        if is_official_n2ldiff(raw):
            raw = convert_official_n2ldiff(raw, Path(path))
    if not isinstance(raw, dict):
        raise OptionError(f"config {path or ''} must be a mapping of keys, got {_describe_value(raw)}")
    raw = apply_overrides(copy.deepcopy(raw), overrides)
    opt = _complete(_fix_numbers(raw), TOP, "")
    opt = _normalise_paths(opt)
    opt["is_train"] = is_train
    opt["opt_path"] = str(path) if path is not None else None
    net = opt["network_G"]
    net["scale"] = opt["scale"]
    train = opt["train"]
    if train["niter"] is not None:
        train["niter"] = int(train["niter"])  # validated: a positive integer
        for key in ("lr_steps", "restarts", "lr_steps_inverse"):   # relative steps, as the official parser does
            if train[key] is None and train[f"{key}_rel"]:
                train[key] = [int(r * train["niter"]) for r in train[f"{key}_rel"]]
    for phase, d in opt["datasets"].items():
        # The preprocessing switches live at the top level in the official files; datasets read them here.
        d["phase"] = phase
        for k in ("concat_histeq", "histeq_as_input"):
            if d.get(k) is None:
                d[k] = opt[k]
        if d.get("dataset") is None:
            d["dataset"] = opt["dataset"] or "LoL"
    return opt


def dump_options(opt: dict, path: str | os.PathLike):
    """Write the resolved options (plain YAML) next to a run."""
    clean = {k: v for k, v in opt.items() if k not in ("opt_path",)}
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(clean, f, sort_keys=False)


def add_common_args(parser):
    """--opt CONF and repeatable --set key=value, shared by every script."""
    parser.add_argument("--opt", required=True, help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, dotted keys (repeatable), e.g. --set train.niter=100")
    return parser
