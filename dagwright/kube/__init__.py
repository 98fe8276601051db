"""The Kubernetes layer every dagwright process shares: ``client`` (connecting,
sending, merge patches, errors) and ``objects`` (the operator's idempotent
calls)."""
