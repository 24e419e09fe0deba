"""Fixtures for the Kubernetes runtime tests: the catalog, the site config and a fake cluster."""

from __future__ import annotations

import pytest

from controller.domain.hardware import Catalog, load_catalog
from controller.runtimes.kubernetes.objects import SiteConfig
from tests.runtimes.kubernetes import fake


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def site(catalog: Catalog) -> SiteConfig:
    return SiteConfig(catalog=catalog, poll_interval=0)


@pytest.fixture
def cluster() -> fake.FakeKube:
    return fake.FakeKube()
