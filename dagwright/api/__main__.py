"""``python -m dagwright.api``: serve the REST API with uvicorn."""

from __future__ import annotations

import os

import uvicorn


def main() -> None:
    # X-Forwarded-For only from the proxies named (uvicorn's own default
    # trusts it from loopback, which a sidecar or port-forward shares).
    trusted = os.environ.get("DAGWRIGHT_API_TRUSTED_PROXIES", "").strip()
    uvicorn.run(
        "dagwright.api.app:create_app",
        factory=True,
        host=os.environ.get("DAGWRIGHT_API_HOST", "0.0.0.0"),
        port=int(os.environ.get("DAGWRIGHT_API_PORT", "8080")),
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or "",
    )


if __name__ == "__main__":
    main()
