"""The per-host master: holds the host's only Redis connections and routes to workers."""
