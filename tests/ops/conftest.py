"""Fixtures for the operations suites: a parsed scrape, a fresh SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from portal import create_app
from tests.conftest import base_config, migrate


def scrape(client: Any, **kwargs: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed with prometheus-client's parser: {(sample, labels): value}."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.data
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """One sample's value, 0 when the series is absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Callable[..., Flask]:
    """``make(migrated=True, **config)``: an app on a SQLite file of its own."""

    def make(*, migrated: bool = True, **config: Any) -> Flask:
        url = f"sqlite:///{tmp_path / 'own.db'}"
        if migrated and not (tmp_path / "own.db").exists():
            migrate(url)
        return create_app(base_config(url, **config))

    return make
