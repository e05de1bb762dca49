"""One table of settings (web/settings.py): the app, gunicorn and the front read it, the README
and app.json list it, and a bad value stops every one of them with the same message."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys

import pytest

from app import create_app
from web.settings import BY_NAME, SETTINGS, SettingError, default_text, read_settings

from testing import ROOT


def readme_rows() -> list[tuple[list[str], list[str]]]:
    """(names, defaults) of each row of the README's configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration"):text.index("## Layout")]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([A-Z0-9_]+)`", cells[0]), [item.strip() for item in cells[1].split(", ")]))
    return rows


def test_the_readme_lists_every_setting_once_with_its_default():
    rows = readme_rows()
    listed = [name for names, _ in rows for name in names]
    assert sorted(listed) == sorted(BY_NAME), "the README's table and web/settings.py differ"
    for names, defaults in rows:
        assert len(names) == len(defaults), (names, defaults)
        for name, written in zip(names, defaults):
            expected = default_text(BY_NAME[name])
            if written.startswith("`"):
                assert written.strip("`") == expected, name
            else:  # words: a computed default, or none
                assert expected in (None, ""), f"{name}: the README says {written!r}, the table {expected!r}"


def test_app_json_lists_every_setting_with_its_default_and_meaning():
    env = json.loads((ROOT / "app.json").read_text())["env"]
    assert set(env) == {s.name for s in SETTINGS if not s.set_by_platform}
    for name, spec in env.items():
        setting = BY_NAME[name]
        assert spec.get("value") == (default_text(setting) or None), name
        assert spec["description"] == setting.help


def test_unset_blank_and_default_values_read_the_same():
    unset = read_settings({})
    assert read_settings({name: "" for name in BY_NAME if not BY_NAME[name].blank_is_a_value}) == unset
    written = {s.name: default_text(s) for s in SETTINGS if default_text(s)}
    assert read_settings(written) == unset


@pytest.mark.parametrize("name, raw, says", [
    ("MAX_UPLOAD_MB", "lots", "MAX_UPLOAD_MB must be an integer"),
    ("MAX_UPLOAD_MB", "0", "MAX_UPLOAD_MB must be at least 1"),
    ("RATE_LIMIT", "0.001", "RATE_LIMIT must be 0 (off) or at least one a minute"),
    ("DRIFT_THRESHOLD", "2", "DRIFT_THRESHOLD must be a number from 0 to 1"),
    ("INFERENCE_ENGINE", "tpu", "INFERENCE_ENGINE must be one of auto, onnxruntime, torchscript"),
    ("MONITORING_WINDOW", "forever", "MONITORING_WINDOW must be a duration"),
    ("TRUSTED_PROXIES", "the router", "TRUSTED_PROXIES must be comma-separated addresses or networks"),
    ("API_KEY", "short", "API_KEY must be at least 16 printable ASCII characters"),
    ("KEEP_IMAGES", "maybe", "KEEP_IMAGES must be 1 or 0"),
    ("PORT", "70000", "PORT must be an integer from 1 to 65535"),
])
def test_a_bad_value_is_one_error_that_names_the_setting(name, raw, says):
    with pytest.raises(SettingError, match=re.escape(says)):
        read_settings({name: raw})


def test_the_app_gunicorn_and_the_front_refuse_a_bad_value_alike(monkeypatch, tmp_path):
    monkeypatch.setenv("MAX_BATCH_FILES", "many")
    expected = "MAX_BATCH_FILES must be an integer"
    with pytest.raises(SettingError, match=expected):
        create_app({"TESTING": True, "LOAD_MODEL": False})
    with pytest.raises(SettingError, match=expected):
        runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    front = subprocess.run([sys.executable, str(ROOT / "bin" / "start-nginx"), "true"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert front.returncode == 2 and expected in front.stderr


def test_the_app_reads_overrides_through_the_same_checks():
    with pytest.raises(SettingError, match="TORCH_THREADS must be at least 1"):
        create_app({"TESTING": True, "LOAD_MODEL": False, "TORCH_THREADS": 0})
    app = create_app({"TESTING": True, "LOAD_MODEL": False, "MAX_UPLOAD_MB": 3})
    assert app.config["MAX_CONTENT_LENGTH"] == 3 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_setting_is_used_where_it_matters(name):
    """Each setting is looked up by name somewhere beside the table: none is declared and ignored."""
    sources = [ROOT / "app.py", ROOT / "gunicorn.conf.py", *ROOT.glob("web/*.py"), *ROOT.glob("front/*.py"),
               *ROOT.glob("classifier/*.py")]
    users = [path.name for path in sources if path.name != "settings.py" and f'"{name}"' in path.read_text()]
    assert users, f"nothing reads {name}"
