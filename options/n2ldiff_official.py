"""The official N2LDiff YAML format (allanchan339/N2LDiff cfg/train/*.yaml, cfg/test/*.yaml): detection and
conversion to our option tree.

The official files are flat argparse namespaces. Every key of the shipped train and test configs is known here:
model keys map to ``network_G.n2ldiff``, training keys to ``train`` / ``datasets``, test folders to
``dataroot_LR`` / ``dataroot_GT``; Lightning / wandb plumbing is accepted and has no effect. An unknown key, or a
value selecting a code path the official release does not ship or we do not implement, is a one-line error naming
the key. ``switch_normal_low`` becomes ``swap_roles`` (the network's input is the normal-light image).
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import OptionError

# model structure: official key -> network_G.n2ldiff key
_MODEL = {"unet_dim": "dim", "dim_mults": "dim_mults", "in_dim": "in_dim", "unet_outdim": "out_dim",
          "cond_in_dim": "cond_in_dim", "use_wn": "use_wn", "cond_use_wn": "cond_use_wn",
          "use_instance_norm": "use_instance_norm", "weight_init": "weight_init", "stronger_cond": "stronger_cond",
          "use_attn": "use_attn", "timesteps": "timesteps", "clip_denoised": "clip_denoised",
          "use_center": "use_center", "use_center_sampler": "use_center_sampler", "on_cond": "on_cond",
          "cond_on_res": "cond_on_res"}
# keys whose value must be one of these (other values select code paths that are not available)
_REQUIRED = {
    "on_diffusion_from_scratch": ([True], "the other mode needs a pretrained histogram encoder the release lacks"),
    "on_res": ([False], "residual mode is not implemented"),
    "color_space": (["rgb"], "only RGB is implemented"),
    "sample_mode": (["ddpm"], "only the DDPM sampler exists"),
    "return_all_timesteps": ([False], "intermediate steps are not returned"),
    "use_attn": ([False], "no official config enables attention"),
    "on_cond": (["img_lr", "h(img_lr)"], "the official choices"),
    "lpips_type": (["vgg"], "the LPIPS-VGG loss is the one implemented"),
    "loss_type": (["combined", "l1", "l2", "lpips"], "the official choices"),
    "optimizer": (["Lion", "AdamW"], "the official choices"),
    "scheduler": ([None], "official configs use none; use our train.lr_scheme instead"),
    "accumulate_grad_batches": ([1], "gradient accumulation is not implemented"),
    "gradient_clip_algorithm": (["norm"], "train.grad_clip clips the global norm"),
    "precision": ([32, "32"], "use train.use_amp for mixed precision"),
    "decrease_resolution": ([False, None], "not implemented; resize inputs beforehand"),
    "fast_dev_run": ([False, None, 0], "use --set train.niter=N"),
    "scale_factor": ([1, 1.0, None], "the official datasets never rescale"),
}
# accepted, no effect here (Lightning, wandb, scheduler parameters of unused schedulers, test batch size, ...)
_INERT = {"use_wandb", "devices", "strategy", "group", "entity", "project", "project_diffusion_from_scratch",
          "group_test", "benchmark", "enable_checkpointing", "accelerator", "min_epochs", "detect_anomaly",
          "deterministic", "num_sanity_val_steps", "batch_size", "persistent_workers", "PaperImageExtractor",
          "warmup", "max_iters", "factor", "patience", "min_lr", "optim_mode", "rescale_ratio", "paddingMode",
          "results_folder", "results_folder_unpaired"}
# mapped below
_MAPPED = {"seed", "train_lr", "gradient_clip_val", "max_epochs", "check_val_every_n_epoch", "image_size",
           "train_batch_size", "num_workers", "pin_memory", "use_dataset", "train_folders_v1", "train_folders_v2",
           "train_folders_VE", "train_folders_4k", "test_folder", "test_folder_unpaired", "diffusion_path",
           "switch_normal_low", "log_every_n_steps"}
KNOWN = set(_MODEL) | set(_REQUIRED) | _INERT | _MAPPED
_DATASETS = {"LOL": ["train_folders_v1"], "LOLv2": ["train_folders_v2"], "LOL4K": ["train_folders_4k"],
             "LOL+LOLv2": ["train_folders_v1", "train_folders_v2"],
             "LOL+LOLv2+VELOL": ["train_folders_v1", "train_folders_v2", "train_folders_VE"]}
_IMAGE_EXT = (".bmp", ".png", ".jpg", ".jpeg")  # the official is_image_file


def is_official_n2ldiff(raw) -> bool:
    """A flat official N2LDiff config (has the U-Net and diffusion keys, none of our sections)."""
    return isinstance(raw, dict) and {"unet_dim", "dim_mults", "timesteps"} <= set(raw) and "network_G" not in raw


def _error(msg):
    return OptionError(msg)


def _count_pairs(roots) -> int | None:
    """Training pairs in the official layout (<root>/high), or None if a folder is not there (yet)."""
    n = 0
    for r in roots:
        high = Path(r) / "high"
        if not high.is_dir():
            return None
        n += sum(1 for f in high.iterdir() if f.name.endswith(_IMAGE_EXT))
    return n


def convert_official_n2ldiff(raw: dict, path) -> dict:
    """Our option tree for an official N2LDiff config; errors name the offending key."""
    unknown = sorted(k for k in raw if k not in KNOWN)
    if unknown:
        import difflib
        close = difflib.get_close_matches(str(unknown[0]), sorted(KNOWN), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        more = f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise _error(f"unknown option '{unknown[0]}'{hint}{more} in the official N2LDiff config '{path}'")
    for key, (allowed, why) in _REQUIRED.items():
        if key in raw and raw[key] not in allowed:
            raise _error(f"official N2LDiff option '{key}: {raw[key]}' is not supported ({why}); "
                         f"allowed: {', '.join(map(str, allowed))}")
    get = raw.get
    swap = bool(get("switch_normal_low", True))
    net = {ours: (list(raw[k]) if k == "dim_mults" else raw[k]) for k, ours in _MODEL.items() if k in raw}
    if int(net.get("in_dim", 6)) != 6 or int(net.get("out_dim", 3)) != 3 or int(net.get("cond_in_dim", 12)) != 12:
        raise _error("official N2LDiff options in_dim / unet_outdim / cond_in_dim must be 6 / 3 / 12 "
                     "(x_t and the image, an RGB output, the 12-channel condition)")
    opt = {"name": Path(path).stem, "model": "N2LDiff",
           "network_G": {"which_model_G": "N2LDiff", "n2ldiff": net},
           "path": {}, "logger": {}, "datasets": {}}
    optimizer = get("optimizer", "Lion")
    train = {"manual_seed": get("seed", 10), "lr_G": float(get("train_lr", 4e-4)),
             "grad_clip": get("gradient_clip_val"),
             "beta1": 0.9, "beta2": 0.99 if optimizer == "Lion" else 0.999,   # lion-pytorch / torch defaults
             "weight_decay_G": 0.0 if optimizer == "Lion" else 0.01,
             "n2ldiff": {"optimizer": optimizer, "loss_type": get("loss_type", "combined")}}
    opt["train"] = train
    if get("log_every_n_steps"):
        opt["logger"]["print_freq"] = int(raw["log_every_n_steps"])
    if get("diffusion_path"):
        opt["model_path"] = raw["diffusion_path"]
        opt["path"]["pretrain_model_G"] = raw["diffusion_path"]
    workers = int(get("num_workers") or 0)
    common = {"dataset": "HighLowFolders", "swap_roles": swap, "log_low": False, "n_workers": workers}
    if get("use_dataset") is not None:
        if raw["use_dataset"] not in _DATASETS:
            raise _error(f"official N2LDiff option 'use_dataset: {raw['use_dataset']}' is not one of "
                         f"{', '.join(_DATASETS)}")
        missing = [k for k in _DATASETS[raw["use_dataset"]] if not get(k)]
        if missing:
            raise _error(f"official N2LDiff option 'use_dataset: {raw['use_dataset']}' needs '{missing[0]}'")
        roots = [raw[k] for k in _DATASETS[raw["use_dataset"]]]
        batch = int(get("train_batch_size") or 1)
        opt["datasets"]["train"] = dict(common, roots=roots, batch_size=batch, use_crop=True,
                                        GT_size=int(get("image_size") or 160), use_flip=True, use_rot=True,
                                        pin_memory=bool(get("pin_memory")))
        # Lightning counts epochs; our trainer counts steps (drop_last batches), so convert when the data is there.
        pairs = _count_pairs(roots)
        if pairs is not None and pairs >= batch:
            per_epoch = pairs // batch
            train["niter"] = int(get("max_epochs") or 1000) * per_epoch
            train["val_freq"] = int(get("check_val_every_n_epoch") or 1) * per_epoch
    test_folder = get("test_folder")
    if test_folder:
        inp, ref = ("high", "low") if swap else ("low", "high")
        opt["dataroot_LR"] = str(Path(test_folder) / inp)
        opt["dataroot_GT"] = str(Path(test_folder) / ref)
        opt["datasets"]["val"] = dict(common, roots=[test_folder])  # the official code validates on test_folder
    if get("test_folder_unpaired"):
        opt["dataroot_LR"] = raw["test_folder_unpaired"]
        opt["dataroot_GT"] = None
    opt["datasets"].setdefault("test", {"log_low": False, "swap_roles": swap})
    return opt
