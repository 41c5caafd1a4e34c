"""Training on the one shell (:mod:`jointdiff.training.shell`): the JeDi trainer (objective eq. 2, typed
config, data, checkpoints, monitors), DreamBooth fine-tuning, the miniature VAE and the toy evaluators."""
