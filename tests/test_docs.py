"""The generated reference (docs/gen_reference.py) names every setting, command and route.

Each test finds what must be listed by another road than the generator's own: settings from the
source text (ast), commands from typer's registration lists (not click introspection), routes
from the app's route table (not the OpenAPI schema).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import fastapi.routing
import pytest
from fastapi.routing import APIRoute

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs/gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settings_fields_in_source() -> dict[str, list[str]]:
    """class name → field names, for every class whose bases end in 'Settings' (by ast)."""
    found: dict[str, list[str]] = {}
    for package in ("geo", "maps", "api", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                if not any(b.endswith("Settings") for b in bases):
                    continue
                fields = [s.target.id for s in node.body
                          if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                          and s.target.id != "model_config"]
                if fields:
                    found[node.name] = fields
    return found


def test_every_setting_is_in_the_reference(gen: ModuleType) -> None:
    page = gen.settings_page()
    source = _settings_fields_in_source()
    assert len(source) >= 5
    for cls, fields in source.items():
        assert f"## {cls}" in page, cls
        for name in fields:
            assert re.search(rf"\| `WANGGE_{name.upper()}` \|", page), (cls, name)


def test_the_reference_does_not_print_a_generated_secret(
        gen: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "a-secret-that-must-not-be-printed-" + "x" * 16
    monkeypatch.setenv("WANGGE_JWT_SECRET", secret)
    page = gen.settings_page()
    assert "WANGGE_JWT_SECRET" in page and secret not in page
    assert str(ROOT) not in page  # paths are shown relative to the project


def _typer_commands(app, prefix: str) -> list[tuple[str, Callable[..., Any]]]:  # type: ignore[no-untyped-def]
    """(full name, function) of every command registered on a typer app (typer's own lists)."""
    found = []
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        found.append((f"{prefix} {name}", info.callback))
    for group in app.registered_groups:
        found += _typer_commands(group.typer_instance, f"{prefix} {group.name}")
    return found


def _parameter_names(function: Callable[..., Any]) -> list[str]:
    """How each parameter of a typer command is named on the command line."""
    import typer.models

    names = []
    for param in inspect.signature(function).parameters.values():
        info = param.default
        for meta in getattr(param.annotation, "__metadata__", ()):
            if isinstance(meta, typer.models.ParameterInfo):
                info = meta
        if isinstance(info, typer.models.ArgumentInfo) or (
                not isinstance(info, typer.models.OptionInfo) and info is param.empty):
            names.append(f"`{param.name.upper()}`")
        elif isinstance(info, typer.models.OptionInfo) and info.param_decls:
            names.append(info.param_decls[0].split("/")[0])
        else:
            names.append(f"--{param.name.replace('_', '-')}")
    return names


def test_every_command_and_option_is_in_the_reference(gen: ModuleType) -> None:
    from cli.main import app

    page = gen.cli_page()
    sections = re.split(r"^#+ (wangge.*)$", page, flags=re.MULTILINE)
    by_name = dict(zip(sections[1::2], sections[2::2], strict=True))
    commands = _typer_commands(app, "wangge")
    assert len(commands) >= 30
    for name, function in commands:
        assert name in by_name, name
        for option in _parameter_names(function):
            assert option in by_name[name], (name, option)


def _all_routes(app: Any) -> list[Any]:
    """Every route of the app, also those inside included routers.

    Newer FastAPI keeps an included router as one ``_IncludedRouter`` entry of ``app.routes``;
    ``iter_route_contexts`` walks into them.
    """
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    return [c.route for c in walk(app.routes)] if walk else list(app.routes)


def _api_routes(app: Any) -> list[APIRoute]:
    return [r for r in _all_routes(app) if isinstance(r, APIRoute)]


def test_every_route_is_in_the_reference(gen: ModuleType) -> None:
    from api.main import create_app

    page = gen.http_page()
    app = create_app()
    routes = [r for r in _api_routes(app) if r.include_in_schema]
    assert len(routes) >= 40
    for route in routes:
        for method in route.methods - {"HEAD", "OPTIONS"}:
            assert f"### {method} {route.path}\n" in page, (method, route.path)
        assert f"operation id: `{route.operation_id}`" in page, route.path
    hidden = [r for r in _all_routes(app) if not getattr(r, "include_in_schema", True)]
    assert hidden  # /docs, /redoc, /openapi.json
    for route in hidden:
        assert f"| `{route.path}` |" in page, route.path


def test_external_loads_are_found(gen: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(
        '<a href="https://example.org/">link</a><link rel="stylesheet" href="css/x.css">'
        '<script src="https://cdn.example.com/x.js"></script><img src=//img.example.com/i.png>',
        encoding="utf-8")
    (tmp_path / "b.css").write_text(
        "@import url('https://fonts.example.com/f.css'); a{background:url(img/ok.png)}",
        encoding="utf-8")
    found = gen.external_loads(tmp_path)
    assert found == ["a.html: https://cdn.example.com/x.js", "a.html: //img.example.com/i.png",
                     "b.css: https://fonts.example.com/f.css"]
