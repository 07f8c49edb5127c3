"""Servers some tests need that a developer may not have installed: without one such a test
skips, unless CI sets OBJSTORE_REQUIRE_<SERVER>, where it fails instead."""

from __future__ import annotations

import os

import pytest

from servers import old_provider
from servers.azurite import azurite_available
from servers.ceph_rgw import ceph_available


def require(name: str, installed: bool, variable: str, how: str) -> None:
    """Skip the test when `installed` is false; fail it when the environment variable is set."""
    if installed:
        return
    if os.environ.get(variable):
        pytest.fail(f"{name} is required here ({variable}) but not installed: {how}")
    pytest.skip(f"{name} is not installed ({how})")


def require_ceph() -> None:
    require("Ceph RGW", ceph_available(), "OBJSTORE_REQUIRE_CEPH", "run .ci/install-ceph")


def require_azurite() -> None:
    require("Azurite", azurite_available(), "OBJSTORE_REQUIRE_AZURITE",
            "run `make test`, which runs `npm ci --prefix servers/azurite`, with Node.js")


def require_old_provider() -> None:
    require("synapse-s3-storage-provider 1.7.0's environment", old_provider.installed(),
            "OBJSTORE_REQUIRE_OLD_PROVIDER", f"`python3 -m servers.old_provider` builds it in {old_provider.VENV}")
