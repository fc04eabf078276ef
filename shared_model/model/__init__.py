"""The model: the Claim-PT transformer's configuration, layers and networks, its heads' losses
and the precision of their matmuls (docs/architecture.md §3)."""
