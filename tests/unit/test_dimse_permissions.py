"""DIMSE permissions: the decision (skypacs.dimse.permissions) and its configuration (file and environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skypacs.config import ENV_DIMSE_PERMISSIONS, load_settings
from skypacs.dimse.permissions import OPERATIONS, Permissions, parse_permissions


def test_without_permissions_every_ae_may_do_everything() -> None:
    permissions = Permissions.from_config(None)
    assert not permissions.configured
    assert all(permissions.allows("ANYONE", operation) for operation in OPERATIONS)


def test_an_ae_may_do_only_what_its_entry_lists() -> None:
    permissions = Permissions.from_config({"CT01": ["store"], "WORKSTATION": ["find", "move", "get"]})
    assert permissions.allows("CT01", "store")
    assert not any(permissions.allows("CT01", operation) for operation in ("find", "move", "get"))
    assert not permissions.allows("WORKSTATION", "store")
    assert all(permissions.allows("WORKSTATION", operation) for operation in ("find", "move", "get"))


def test_an_ae_without_an_entry_gets_the_star_entry_or_nothing() -> None:
    assert not any(Permissions.from_config({"CT01": ["store"]}).allows("OTHER", op) for op in OPERATIONS)
    permissions = Permissions.from_config({"CT01": ["store"], "*": ["find"]})
    assert permissions.allows("OTHER", "find")
    assert not permissions.allows("OTHER", "store")
    assert not permissions.allows("CT01", "find"), "an AE's own entry replaces the * entry"


def test_calling_ae_padding_is_ignored_and_an_empty_list_grants_nothing() -> None:
    permissions = Permissions.from_config({"CT01": ["store"], "LOCKED": []})
    assert permissions.allows("CT01            ", "store")
    assert not any(permissions.allows("LOCKED", operation) for operation in OPERATIONS)


@pytest.mark.parametrize("entries", [{"CT01": ["store", "delete"]}, {"CT01": "store"}])
def test_unknown_operations_and_bare_strings_are_refused(entries: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="CT01"):
        Permissions.from_config(entries)  # type: ignore[arg-type]


def test_environment_form() -> None:
    assert parse_permissions("CT01=store, WS1=find+move+get,*=find,") == {
        "CT01": ["store"], "WS1": ["find", "move", "get"], "*": ["find"]}
    with pytest.raises(ValueError, match="AE=operation"):
        parse_permissions("CT01")


def test_settings_read_permissions_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text(
        '[dimse.permissions]\nCT01 = ["store"]\nWORKSTATION = ["find", "move", "get"]\n"*" = ["find"]\n'
    )
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.dimse_permissions == {"CT01": ("store",), "WORKSTATION": ("find", "move", "get"), "*": ("find",)}


def test_the_environment_replaces_the_file(tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text('[dimse.permissions]\nCT01 = ["store"]\n')
    settings = load_settings(data_dir=tmp_path, environ={ENV_DIMSE_PERMISSIONS: "WS1=find+get"})
    assert settings.dimse_permissions == {"WS1": ("find", "get")}
    assert load_settings(data_dir=tmp_path / "none", environ={}).dimse_permissions == {}


@pytest.mark.parametrize("toml", [
    '[dimse.permissions]\nCT01 = ["store", "delete"]\n',
    '[dimse.permissions]\nCT01 = "store"\n',
    '[dimse.permissions]\n"THIS-AE-TITLE-IS-TOO-LONG" = ["store"]\n',
])
def test_invalid_permissions_fail_at_startup(tmp_path: Path, toml: str) -> None:
    (tmp_path / "skypacs.toml").write_text(toml)
    with pytest.raises(ValueError, match="permissions"):
        load_settings(data_dir=tmp_path, environ={})


def test_the_cli_passes_permissions_to_the_gateway(tmp_path: Path) -> None:
    from skypacs.cli import _gateway_options

    settings = load_settings(data_dir=tmp_path, environ={ENV_DIMSE_PERMISSIONS: "CT01=store"})
    options = _gateway_options(settings)
    assert options.permissions.allows("CT01", "store")
    assert not options.permissions.allows("CT01", "find")
