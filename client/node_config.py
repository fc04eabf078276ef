"""The node config keys `claimpt site join` sets for its SuperNode: only the site sets them, and the
ClientApp reads the site's data, policy and state from them (never from the run config)."""

DATA_PATH_KEY = "data-path"  # the site's prepared MEDS directory
SITE_ID_KEY = "site-id"  # the site's name in its own logs and metrics
POLICY_KEY = "policy"  # the site's policy file
STATE_DIR_KEY = "state-dir"  # the site's state directory (privacy ledger, errors.log)
IDENTITY_KEY = "identity-key"  # the site's Ed25519 key (claimpt site keys): signs its privacy statements
