"""docs/configuration.md is the settings object rendered, and the comparison catches a setting added or removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, create_model, model_validator
from pydantic_settings import BaseSettings

from core import settings_doc
from core.settings import Settings

PAGE = settings_doc.DEFAULT_PATH


def _changed_lines(diff: str) -> list[str]:
    """The diff's added and removed lines, without its file headers."""
    return [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_the_committed_page_is_the_rendered_one() -> None:
    diff = settings_doc.check(PAGE)
    assert not diff, f"docs/configuration.md differs from core/settings.py: run make docs-config\n{diff}"


def test_every_setting_appears_by_its_environment_variable() -> None:
    page = settings_doc.render_markdown()
    for name, info in Settings.model_fields.items():
        assert f"| `LAB_{name.upper()}` |" in page
        assert info.description, f"Settings.{name} has no description="


def test_the_page_does_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    page = settings_doc.render_markdown()
    monkeypatch.setenv("LAB_HOME", "/somewhere/else")
    monkeypatch.setenv("LAB_SERVE_PORT", "1")
    assert settings_doc.render_markdown() == page


def _rendered_page(tmp_path: Path) -> Path:
    """The page as the current settings render it, so that a stale committed page fails only the first test."""
    page = tmp_path / "configuration.md"
    page.write_text(settings_doc.render_markdown(), encoding="utf-8")
    return page


def test_a_setting_added_without_regenerating_is_caught(tmp_path: Path) -> None:
    grown = create_model(
        "Settings",
        __base__=Settings,
        new_setting=(int, Field(default=7, description="A setting the page has not heard of.")),
    )
    diff = settings_doc.check(PAGE, grown)
    assert any(line.startswith("+") and "`LAB_NEW_SETTING`" in line for line in _changed_lines(diff)), diff
    # Against an up-to-date page the new row is the whole difference.
    assert _changed_lines(settings_doc.check(_rendered_page(tmp_path), grown)) == [
        "+| `LAB_NEW_SETTING` | int | `7` | A setting the page has not heard of. |",
    ]


def test_a_setting_removed_without_regenerating_is_caught(tmp_path: Path) -> None:
    # pydantic cannot drop a field from a subclass: the same fields, validator and config, less one.
    fields = {name: (info.annotation, info) for name, info in Settings.model_fields.items() if name != "serve_port"}
    validators = {
        name: model_validator(mode=decorator.info.mode)(decorator.func)
        for name, decorator in Settings.__pydantic_decorators__.model_validators.items()
    }
    shrunk: type[BaseSettings] = create_model(
        "Settings",
        __base__=BaseSettings,
        __validators__=validators,
        **fields,  # type: ignore[call-overload]
    )
    shrunk.model_config.update(Settings.model_config)
    diff = settings_doc.check(PAGE, shrunk)
    assert any(line.startswith("-| `LAB_SERVE_PORT` |") for line in _changed_lines(diff)), diff
    changed = _changed_lines(settings_doc.check(_rendered_page(tmp_path), shrunk))
    assert len(changed) == 1 and changed[0].startswith("-| `LAB_SERVE_PORT` |"), changed


def test_main_writes_the_page_and_check_reports_a_stale_one(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    assert settings_doc.main([str(page)]) == 0
    assert page.read_text() == settings_doc.render_markdown()
    assert settings_doc.main(["--check", str(page)]) == 0
    page.write_text(page.read_text().replace("LAB_SERVE_PORT", "LAB_SERVE_PORTS"))
    assert settings_doc.main(["--check", str(page)]) == 1
    assert "LAB_SERVE_PORT" in settings_doc.check(page)
