"""The miniature JeDi (issue 7): shapes and settings (``config``), the toy tokenizer, assembly from scratch
and the shipped fp16 form (``assemble``). Its VAE trains on the training shell (``training/vae.py``); its
reference probe is a toy evaluation (``evaluation/toy/probe.py``). See docs/miniature.md.
"""
