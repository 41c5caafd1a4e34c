"""The JeDi core (Zeng et al. 2024, sec. 3): coupled self-attention, image sets, the reference-conditioned
joint U-Net, guidance, replacement-trick sampling, the diffusers pipeline and model conversion.

Import from the modules (``jointdiff.jedi.pipeline`` ...) or the public names of ``jointdiff``.
"""
