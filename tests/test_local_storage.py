"""`enable_local_media_storage` on Synapse versions with and without the option (local_storage.py).

Runs on every Synapse we support: the refusal matters on those before 1.146."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from synapse.config._base import ConfigError as SynapseConfigError

from synapse_objstore.cli.homeserver import Homeserver as HomeserverConfig
from synapse_objstore.local_storage import local_media_storage_enabled, synapse_version


def write_config(path: Path, **keys: Any) -> str:
    path.write_text(yaml.safe_dump({"server_name": "test", "report_stats": False, **keys}))
    return str(path)


def test_a_synapse_without_the_option_refuses_it_naming_the_version_and_the_alternative(tmp_path: Path) -> None:
    """Before 1.146 Synapse ignores enable_local_media_storage and keeps writing to the disk."""
    media = SimpleNamespace(media_store_path="/data/media_store")  # no enable_local_media_storage: an old Synapse
    off = SimpleNamespace(config=SimpleNamespace(media=media, config_files=[
        write_config(tmp_path / "a.yaml", enable_local_media_storage=True),
        write_config(tmp_path / "b.yaml", enable_local_media_storage=False)]))
    on = SimpleNamespace(config=SimpleNamespace(media=media, config_files=[write_config(tmp_path / "c.yaml")]))

    with pytest.raises(SynapseConfigError) as refused:
        local_media_storage_enabled(off)
    message = str(refused.value)
    assert f"Synapse {synapse_version()} does not support it (it was added in Synapse 1.146)" in message
    assert "objstore-offload upload --delete" in message and "/data/media_store" in message
    assert local_media_storage_enabled(on) is True


def test_a_synapse_with_the_option_is_taken_at_its_word(tmp_path: Path) -> None:
    media = SimpleNamespace(media_store_path="/data/media_store", enable_local_media_storage=False)
    hs = SimpleNamespace(config=SimpleNamespace(media=media, config_files=[write_config(tmp_path / "a.yaml")]))
    assert local_media_storage_enabled(hs) is False


@pytest.mark.parametrize("value", [False, None, 0, ""], ids=["false", "empty", "zero", "empty-string"])
def test_any_false_value_turns_local_storage_off_as_synapse_reads_it(tmp_path: Path, value: Any) -> None:
    """Synapse 1.146 tests `enable_local_media_storage` for truth: `enable_local_media_storage:`
    with no value (a template that rendered nothing) turns local storage off. The provider on an
    older Synapse, and objstore-offload, read it the same way."""
    config = write_config(tmp_path / "homeserver.yaml", enable_local_media_storage=value)
    media = SimpleNamespace(media_store_path="/data/media_store")  # an old Synapse
    with pytest.raises(SynapseConfigError, match="does not support it"):
        local_media_storage_enabled(SimpleNamespace(config=SimpleNamespace(media=media, config_files=[config])))
    assert HomeserverConfig.load([config]).keeps_local_media is False
