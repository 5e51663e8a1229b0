from pathlib import Path

import pytest

from skypacs.config import load_settings, parse_address


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert (settings.ae_title, settings.dimse_port, settings.http_port) == ("SKYPACS", 11112, 8080)
    assert settings.data_dir == Path("./skypacs-data") and settings.allowed_aes == frozenset()


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text(
        '[dimse]\nae_title = "FROMFILE"\nport = 104\nallowed_aes = ["CT01", "MR01"]\n'
        '[dimse.destinations]\nWS1 = "10.0.0.5:104"\n[http]\nport = 9000\n'
    )
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.ae_title == "FROMFILE" and settings.dimse_port == 104 and settings.http_port == 9000
    assert settings.allowed_aes == {"CT01", "MR01"} and settings.destinations == {"WS1": "10.0.0.5:104"}
    settings = load_settings(data_dir=tmp_path, environ={"SKYPACS_AE_TITLE": "FROMENV", "SKYPACS_ALLOWED_AES": "A, B"})
    assert settings.ae_title == "FROMENV" and settings.allowed_aes == {"A", "B"}
    settings = load_settings(data_dir=tmp_path, environ={"SKYPACS_AE_TITLE": "FROMENV"}, overrides={"ae_title": "FLAG"})
    assert settings.ae_title == "FLAG"


def test_data_dir_from_environment(tmp_path: Path) -> None:
    assert load_settings(environ={"SKYPACS_DATA_DIR": str(tmp_path)}).data_dir == tmp_path


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize("title", ["", "SEVENTEEN_CHARS_X", "BACK\\SLASH", " LEADING"])
def test_bad_ae_titles(title: str) -> None:
    with pytest.raises(ValueError, match="AE title"):
        load_settings(environ={}, overrides={"ae_title": title})


def test_move_destinations_from_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text('[dimse.destinations]\nWS1 = "10.0.0.5:104"\nWS2 = "[fd00::5]:11112"\n')
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.destinations == {"WS1": "10.0.0.5:104", "WS2": "[fd00::5]:11112"}
    assert parse_address(settings.destinations["WS2"]) == ("fd00::5", 11112)
    environ = {"SKYPACS_DESTINATIONS": " VIEWER = viewer.local:4242 , PACS2=10.1.2.3:104,"}
    settings = load_settings(data_dir=tmp_path, environ=environ)  # the environment replaces the file's list
    assert settings.destinations == {"VIEWER": "viewer.local:4242", "PACS2": "10.1.2.3:104"}
    assert parse_address("viewer.local:4242") == ("viewer.local", 4242)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("WS1", "is not AE=host:port"),
        ("WS1=10.0.0.5", "is not host:port"),
        ("WS1=10.0.0.5:0", "out of range"),
        ("WS1=10.0.0.5:70000", "out of range"),
        ("WS1=:104", "is not host:port"),
        ("WS1=host:http", "is not host:port"),
        ("SEVENTEEN_CHARS_X=h:104", "AE title"),
        ("=h:104", "AE title"),
    ],
)
def test_bad_move_destinations_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(environ={"SKYPACS_DESTINATIONS": value})


def test_bad_move_destination_in_the_file_names_the_destination(tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text("[dimse.destinations]\nWS1 = 104\n")
    with pytest.raises(ValueError, match="C-MOVE destination WS1: '104' is not host:port"):
        load_settings(data_dir=tmp_path, environ={})
