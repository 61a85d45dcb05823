"""Records, loaders and the benchmark registry. Nothing here imports torch."""

from refusalkit.data.records import Example, Response, Verdict
from refusalkit.data.io import read_examples, read_jsonl, write_jsonl_atomic

__all__ = ["Example", "Response", "Verdict", "read_examples", "read_jsonl", "write_jsonl_atomic"]
