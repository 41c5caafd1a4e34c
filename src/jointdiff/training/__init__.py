"""Training the joint-image model: the JeDi objective (eq. 2), typed configs, the accelerate trainer."""

from jointdiff.training.config import Config, load_config
from jointdiff.training.objective import JediObjective, ObjectiveOutput, draw_known

__all__ = ["Config", "JediObjective", "ObjectiveOutput", "draw_known", "load_config"]
