"""What every data source returns, and its error."""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from ..errors import UserError

SYNTHETIC = "synthetic-freq"  # the built-in data set' name, where a folder path would go
ONE_CLASS = "top-1 over one class is always 100% and means nothing; at least 2 classes are needed"


class DataError(UserError):
    """Unusable data; the message names the path and what is wrong with it."""


@dataclass
class Datasets:
    train: Dataset
    val: Dataset
    num_classes: int
    classes: list[str]
