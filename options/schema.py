"""Every option key the framework knows, with its default (None = no default here). The single place option defaults
live; network sizes have none here: a null network key means the network constructor's default (models/, the
builders' `from_options`; docs/networks.md).

Keys of the official LLFlow, GLTG-AFlow, ZMAR-SNFlow and UPT-Flow YAMLs are all listed (several are inert in the
official code and kept only so those files load unchanged; see docs/training.md "Configuration"). Sections are nested dicts;
`PHASE` is the schema of every `datasets.<phase>` entry.
"""
from __future__ import annotations

FREE = object()  # a dict whose keys are not checked (e.g. the zero_map spec is validated by the data package)

RESTORMER = {"dim": None, "num_blocks": None, "num_refinement_blocks": None, "heads": None,
             "ffn_expansion_factor": None, "bias": None, "LayerNorm_type": None, "inp_channels": None,
             "out_channels": None, "official_compat": None}
MSFORMER = {"dim": None, "num_refinement_blocks": None, "heads": None, "depths": None, "num_heads": None,
            "win_size": None, "token_projection": None, "token_mlp": None, "shift_flag": None, "drop_path_rate": None,
            "ffn_expansion_factor": None, "bias": None, "LayerNorm_type": None, "inp_channels": None,
            "mlp_ratio": None}

FLOW = {
    "K": None, "L": None, "hidden_channels": None, "conditionInFeaDim": None, "noInitialInj": None,
    "coupling": "CondAffineSeparatedAndCond", "additionalFlowNoAffine": None, "split": {"enable": False},
    "fea_up0": None, "stackRRDB": {"blocks": None, "concat": True},
    "CondAffineSeparatedAndCond": {"hidden_channels": None, "eps": None},
    "flow_permutation": None, "norm": None, "condAff": None, "levelConditional": None,
    "augmentation": {"noiseQuant": None},
}

# N2LDiff (model: N2LDiff): the N2LDiffNet keyword arguments (defaults there: the official from_scratch.yaml).
N2LDIFF = dict.fromkeys((
    "dim", "dim_mults", "in_dim", "out_dim", "cond_in_dim", "use_wn", "cond_use_wn", "use_instance_norm",
    "weight_init", "stronger_cond",
    "use_attn",                     # only false is supported (no official config enables it)
    "timesteps", "clip_denoised", "use_center", "use_center_sampler", "on_cond", "cond_on_res",
    "sample_seed",                  # ours: seed of enhance() (validation, test.py): same input, same output
    "sample_steps",                 # ours: sampling steps of enhance(); null = T (official), fewer = respaced
))
N2LDIFF_TRAIN = {
    "official_compat": False,       # true: the official loss (in-place noise mutation), encoder frozen, centre 50/50
    "train_encoder": None,          # None: true, or false with official_compat
    "center_gt_prob": None,         # probability that the GT low image is the centre; None: 0, or 0.5 per batch
    "center_weight": 1.0,           # L1(encoder centre, GT low image) when the encoder trains (not official)
    "optimizer": "Lion",            # Lion | AdamW (train.lr_G, beta1, beta2, weight_decay_G)
    "loss_type": "combined",        # combined (0.9 LPIPS-VGG + 0.1 SmoothL1) | l1 | l2 | lpips
}

# DRBN sizes: the DRBN keyword arguments (defaults there: the official width 16, growth 8, 4 layers, 4 recurrences)
DRBN_SIZES = dict.fromkeys(("width", "growth", "n_layers", "recurrences"))

NETWORK_G = {
    "which_model_G": "LLFlow", "variant": None, "in_nc": None, "out_nc": None, "nf": None, "nb": None, "gc": None,
    "train_RRDB": None, "train_RRDB_delay": None, "scale": 1, "flow": FLOW,
    "restormer": RESTORMER, "msformer": MSFORMER, "n2ldiff": N2LDIFF, "drbn": DRBN_SIZES,
}

PHASE = {
    "name": None, "dataset": None, "mode": None, "root": None, "dataroot_LQ": None, "dataroot_GT": None,
    "quant": None, "use_shuffle": None, "n_workers": 0, "batch_size": 1, "use_flip": False, "use_rot": False,
    "color": None, "use_crop": False, "GT_size": None, "center_crop_hr_size": None, "noise_prob": 0,
    "noise_level": 0, "log_low": None, "gamma_aug": False, "n_max": None, "scale": None, "phase": None,
    # ours
    "subset": None, "cache": False, "zero_map": FREE, "resize_to": None, "test_split": None, "split_file": None,
    "holdout": None, "split": None, "concat_histeq": None, "histeq_as_input": None, "aux_input": None,
    "seed": None, "test_prefix": None, "split_match": None, "frame_pairing": None, "gt_exclude": None,
    "npy_channel_order": None, "pin_memory": False, "use_vflip": False, "use_transpose": False,
    "swap_roles": False,  # LQ <- the GT-side image and GT <- the low image (N2LDiff: normal in, low out)
    "roots": None,        # HighLowFolders: list of folders with high/ and low/
    # semi-supervised training (DRBN stage 2, data/semi_dataset.py): the paired dataset plus two unpaired folders
    "paired_dataset": None, "dataroot_unpaired_LQ": None, "dataroot_HQ": None,
    # Synthetic (data/synthetic_dataset.py): physics ranges (path or mapping), real-pair spec, mixing probability
    "synthesis": FREE, "real": FREE, "synthetic_ratio": None,
}

PATH = {"root": None, "pretrain_model_G": None, "load_submodule": None, "strict_load": True, "resume_state": None,
        "experiments_root": "experiments", "results_root": "results",
        # DRBN stage 2: the stage-1 network when the checkpoint holds only the recomposition net; VGG16 trunk
        "pretrain_stage1": None, "vgg16_features": None}

TRAIN = {
    "manual_seed": 10, "lr_G": 5e-4, "weight_decay_G": 0.0, "beta1": 0.9, "beta2": 0.99, "lr_scheme": "MultiStepLR",
    "warmup_iter": -1, "lr_steps_rel": None, "lr_steps": None, "lr_gamma": 0.5, "weight_l1": 0, "weight_fl": 1,
    "flow_warm_up_iter": None, "niter": None, "val_freq": None, "lr_RRDB": None, "restarts": None,
    "restart_weights": None, "clear_state": None, "T_period_rel": None, "eta_min": None, "lr_steps_inverse_rel": None,
    "restarts_rel": None, "lr_steps_inverse": None,
    # ours
    "use_amp": False, "amp_dtype": None, "invertible_backprop": False, "activation_checkpointing": False,
    "threads": None, "ema_decay": None, "max_nonfinite": 20, "grad_clip": None, "weight_decay_encoder": None,
    "add_gt_noise": None, "channels_last": False, "max_minutes": None,
    # flows (docs/training-equivalence.md): true = the official LLFlow loop (no update at step 1, its lr per step);
    # Adam's betas from beta1/beta2 (the official code ran with (0.9, 0.999)); encoder frozen for this fraction of
    # niter (the official train_RRDB_delay never takes effect)
    "official_loop": True, "use_config_betas": False, "encoder_delay": None,
    "n2ldiff": N2LDIFF_TRAIN,
    # GAN-trained methods (DRBN stage 2)
    "lr_D": None, "weight_gan": None,
}

VAL = {"heats": None, "n_sample": None, "heat": 0.0, "at_start": False, "ssim": "skimage_rgb", "psnr": "uint8", "save_images": True,
       "max_images": None}
TEST = {"heats": None, "heat": None}
LOGGER = {"print_freq": 100, "save_checkpoint_freq": 1000, "keep_checkpoints": 2}
# tile: layer-wise tile size in pixels (null: automatic above max_memory, 0: never); max_memory: GB (null: half of
# the memory available at start-up, or of the free CUDA memory); compile: torch.compile the encoder (opt-in).
INFERENCE = {"tile": None, "max_memory": None, "device": "auto", "amp": False, "pad_mode": "reflect",
             "channels_last": True, "self_ensemble": False, "compile": False, "dtype": "fp32"}

TOP = {
    "name": "experiment", "use_tb_logger": True, "model": "LLFlow", "distortion": None, "scale": 1, "gpu_ids": None,
    "dataset": None, "optimize_all_z": None, "cond_encoder": "ConEncoder1", "train_gt_ratio": 0.2,
    "avg_color_map": False, "concat_histeq": False, "histeq_as_input": False, "concat_color_map": False,
    "gray_map": False, "align_condition_feature": False, "align_weight": None, "align_maxpool": None,
    "to_yuv": False, "encode_color_map": False, "le_curve": False, "sigmoid_output": False, "pad_factor": None,
    "dataroot_unpaired": None, "dataroot_GT": None, "dataroot_LR": None, "dataroot_test": None,
    "dataroot_zeromaps": None, "model_path": None, "heat": 0.0, "is_train": None, "dist": None,
    "datasets": {"*": PHASE}, "network_G": NETWORK_G, "path": PATH, "train": TRAIN, "val": VAL, "test": TEST,
    "logger": LOGGER, "inference": INFERENCE,
}
