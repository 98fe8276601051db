"""``python -m dagwright.api``: serve the REST API with uvicorn."""

from __future__ import annotations

import uvicorn

from dagwright.api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    # X-Forwarded-For only from the proxies named (uvicorn's own default
    # trusts it from loopback, which a sidecar or port-forward shares).
    trusted = settings.trusted_proxies.strip()
    uvicorn.run(
        "dagwright.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or "",
    )


if __name__ == "__main__":
    main()
