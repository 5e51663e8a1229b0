from pathlib import Path

import pytest

from skypacs.config import load_settings


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
