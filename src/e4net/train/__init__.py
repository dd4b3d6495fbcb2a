"""Training: the paper's recipes (:mod:`.recipes`), the run's settings (:mod:`.config`), the trainer
(:mod:`.trainer`), evaluation, checkpoints and loading a trained model (:mod:`.load`), distributed setup, and the
grids of runs behind the paper's tables (:mod:`.grids`, :mod:`.reproduce`)."""

from .checkpoint import CheckpointError
from .config import TrainConfig
from .epoch import TrainingDiverged
from .evaluation import evaluate
from .load import Normalisation, TrainedModel, load_trained
from .recipes import RECIPES, Recipe, recipe_for
from .trainer import train

__all__ = [
    "TrainConfig", "TrainingDiverged", "train", "evaluate", "RECIPES", "Recipe", "recipe_for", "CheckpointError",
    "load_trained", "TrainedModel", "Normalisation",
]  # fmt: skip
