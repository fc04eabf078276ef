"""Experiments that answer the framework's questions, each resumable and writing results + report."""
