"""Data -> tensors: the vocabulary and group map, the one tensorisation, split sample arrays per
task, memory-mapped shards and the tf.data pipeline (docs/architecture.md §2)."""
