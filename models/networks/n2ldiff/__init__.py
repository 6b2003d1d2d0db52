"""N2LDiff (allanchan339/N2LDiff): diffusion synthesis of low-light images from normal-light ones.

layers / unet: the denoiser and condition-encoder U-Nets; condition: their 12-channel input; diffusion: schedule,
forward noising and sampler; network: N2LDiffNet (what checkpoints hold, the enhance protocol); synthesize: the
backend of ``python tools/synthesize.py --method n2ldiff``. The trainable model is models/methods/n2ldiff_model.py.
"""
