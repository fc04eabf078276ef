"""The transfer advisor: from the sites' releasable summaries, the predicted gain of every
partner set for every site and the set to recommend (docs/architecture.md §4)."""
