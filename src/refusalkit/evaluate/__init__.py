"""Run store, resumable runners, metrics and reports."""
