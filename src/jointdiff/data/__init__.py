"""Image-set data (JeDi sec. 3.1, supplementary sec. 6): on-disk formats, readers, mixing, batches."""

from jointdiff.data.formats import (
    SPLIT,
    BadSetError,
    ImageSet,
    WebDatasetWriter,
    read_folder_set,
    read_paper_set,
    write_folder_set,
    write_paper_set,
)
from jointdiff.data.sources import Part, open_source
from jointdiff.data.stream import BatchSpec, SetBatchStream, SetSampler, WeightedSource

__all__ = [
    "SPLIT",
    "BadSetError",
    "BatchSpec",
    "ImageSet",
    "Part",
    "SetBatchStream",
    "SetSampler",
    "WebDatasetWriter",
    "WeightedSource",
    "open_source",
    "read_folder_set",
    "read_paper_set",
    "write_folder_set",
    "write_paper_set",
]
