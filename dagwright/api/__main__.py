"""``python -m dagwright.api``: serve the REST API with uvicorn."""

from __future__ import annotations

import os

import uvicorn


def main() -> None:
    uvicorn.run(
        "dagwright.api.app:create_app",
        factory=True,
        host=os.environ.get("DAGWRIGHT_API_HOST", "0.0.0.0"),
        port=int(os.environ.get("DAGWRIGHT_API_PORT", "8080")),
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
