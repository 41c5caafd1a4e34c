"""The toy world's evaluators: the toy CLIP, DINO and segmenter behind the harness interfaces (``models``,
``evaluators``), their quality check, the toy benchmark with its reference rows, and the reference probe.

They train on the training shell (``jointdiff.training.evaluators``); their weights ship in
``jointdiff/weights/toyworld``.
"""
