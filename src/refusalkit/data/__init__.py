"""Records, loaders and the benchmark registry. Nothing here imports torch."""

from refusalkit.data.io import read_examples, read_jsonl, write_jsonl_atomic
from refusalkit.data.records import Example, Response, Verdict

__all__ = ["Example", "Response", "Verdict", "read_examples", "read_jsonl", "write_jsonl_atomic"]
