"""Training: the paper's recipes (:mod:`.recipes`), the loop (:mod:`.loop`), checkpoints, distributed setup."""

from .loop import TrainConfig, TrainingDiverged, evaluate, train
from .recipes import RECIPES, Recipe, recipe_for

__all__ = ["TrainConfig", "TrainingDiverged", "train", "evaluate", "RECIPES", "Recipe", "recipe_for"]
