"""The federation contract: what the ServerApp and the ClientApp agree on (docs/architecture.md
§4): the run configuration, the messages and their one array blob, the checkpoint format and its
signatures, app bundles, the privacy passport and a site's releasable summary."""
