"""Input layer: reading, validating, converting, splitting and writing MEDS datasets."""

from shared_model.data.errors import DataValidationError
from shared_model.data.meds import MedsDataset, read_meds, write_meds
from shared_model.data.summary import DatasetSummary, summarize

__all__ = [
    "DataValidationError",
    "DatasetSummary",
    "MedsDataset",
    "read_meds",
    "summarize",
    "write_meds",
]
