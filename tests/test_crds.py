"""The committed CRDs are exactly what the models generate."""

from __future__ import annotations

from dagwright.crdgen import OUTPUT_DIRS, render


def test_committed_crds_match_the_models() -> None:
    rendered = render()
    for directory in OUTPUT_DIRS:
        on_disk = {p.name: p.read_text() for p in directory.glob("*.yaml")}
        assert on_disk == rendered, f"{directory} is stale: run `python -m dagwright.crdgen`"
