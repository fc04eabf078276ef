"""`claimpt bench`: throughput, memory and data figures (docs/performance.md)."""
