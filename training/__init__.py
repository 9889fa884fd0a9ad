"""Training: datasets (synthetic generator, importers), labels, pipelines."""

from training.importers import ColumnMapping, ImportReport, import_segment_jsonl, import_table, import_taobao
from training.labels import next_purchase_ms, purchase_within
from training.summary import Summary, summarize
from training.synthetic import PERSONAS, SyntheticHistory, generate, truth_paths

__all__ = [
    "PERSONAS",
    "ColumnMapping",
    "ImportReport",
    "Summary",
    "SyntheticHistory",
    "generate",
    "import_segment_jsonl",
    "import_table",
    "import_taobao",
    "next_purchase_ms",
    "purchase_within",
    "summarize",
    "truth_paths",
]
