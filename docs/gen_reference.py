"""The reference pages (settings, CLI, HTTP), generated from the code at build time.

MkDocs loads this file as a hook (``hooks:`` in mkdocs.yml): ``on_files`` adds
``reference/settings.md``, ``reference/cli.md`` and ``reference/http.md`` to the site, so the
reference always matches the code being built, and ``benchmarks.md`` from ``bench/README.md``.
Nothing is written to ``docs/``. ``on_post_build`` fails the build when a page would load
anything from the internet.

- settings: every pydantic-settings class defined in ``geo``, ``maps``, ``api`` or ``cli``
  (found by importing every module of those packages), with env name, type, default, meaning;
- CLI: every command and parameter of ``cli.main:app`` (typer → click introspection);
- HTTP: every operation of ``api.main.create_app().openapi()`` (no database needed: the
  lifespan never runs), with who may call it (``api.policy.POLICY``) and the schemas.

Run by hand: ``python docs/gen_reference.py OUTDIR`` writes the three pages into OUTDIR.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SETTINGS_PACKAGES = ("geo", "maps", "api", "cli")
METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


# ------------------------------------------------------------------------------- markdown bits


def cell(text: object) -> str:
    """Text safe inside a markdown table cell (one line, no pipes, no raw HTML)."""
    s = " ".join(str(text).split())
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object) -> str:
    """Inline code safe inside a table cell."""
    s = " ".join(str(text).split()).replace("|", "\\|")
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table (already escaped cells)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


# ------------------------------------------------------------------------------------ settings


def _modules(package: str) -> list[types.ModuleType]:
    """The package and every module below it, imported (an import error fails the build)."""
    pkg = importlib.import_module(package)
    mods = [pkg]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # runs a program when imported
            continue
        mods.append(importlib.import_module(info.name))
    return mods


def settings_classes(packages: tuple[str, ...] = SETTINGS_PACKAGES) -> list[type]:
    """Every ``BaseSettings`` subclass defined in ``packages`` that declares a field."""
    from pydantic_settings import BaseSettings

    found: dict[str, type] = {}
    for package in packages:
        for mod in _modules(package):
            for _, obj in inspect.getmembers(mod, inspect.isclass):
                if (issubclass(obj, BaseSettings) and obj.__module__ == mod.__name__
                        and _own_fields(obj)):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _own_fields(cls: type) -> list[str]:
    """Fields a settings class declares itself (not inherited from a base with fields)."""
    inherited: set[str] = set()
    for base in cls.__mro__[1:]:
        inherited |= set(getattr(base, "model_fields", {}) or {})
    return [name for name in cls.model_fields if name not in inherited]  # type: ignore[attr-defined]


def env_name(cls: type, name: str) -> str:
    """The environment variable that sets field ``name`` of settings class ``cls``."""
    field = cls.model_fields[name]  # type: ignore[attr-defined]
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return alias.upper()
    prefix = cls.model_config.get("env_prefix", "")  # type: ignore[attr-defined]
    return f"{prefix}{name}".upper()


def type_name(annotation: Any) -> str:
    """A short, readable name for a type annotation."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _field_bounds(field: Any) -> str:
    """" (≥ 0)" and the like, from a field's annotated-types constraints."""
    ops = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥",
           "max_length": "length ≤"}
    bounds = [f"{sign} {getattr(meta, key)}" for meta in field.metadata
              for key, sign in ops.items() if getattr(meta, key, None) is not None]
    return " (" + ", ".join(cell(b) for b in bounds) + ")" if bounds else ""


def default_text(field: Any) -> str:
    """The default as text: JSON for lists and dicts, paths relative to the project."""
    if field.default_factory in (list, dict, set, frozenset, tuple):
        value = field.default_factory()  # an empty container: safe to show
    elif field.default_factory is not None:
        return "computed at start-up (see meaning)"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            return code(f"<project>/{value.relative_to(ROOT)}")
        except ValueError:
            return code(value)
    if isinstance(value, (list, dict, tuple)):
        return code(json.dumps(value, ensure_ascii=False))
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, str) and value == "":
        return '`""`'
    return code(value)


def settings_page() -> str:
    """reference/settings.md."""
    classes = settings_classes()
    out = [
        "# Settings",
        "",
        "Generated from the code by `docs/gen_reference.py` when the site is built.",
        "",
        "Every setting is an environment variable (pydantic-settings; upper or lower case both "
        "work). Lists and dictionaries are given as JSON, e.g. "
        "`WANGGE_CIRCLE_TIERS_M='[300, 500]'`; booleans as `true`/`false`. A variable set to "
        "a value of the wrong type stops the program at start-up with an error naming it. "
        "Each class belongs to one concern; the program builds it where it starts and passes "
        "it in.",
        "",
        f"{len(classes)} classes, "
        f"{sum(len(_own_fields(c)) for c in classes)} settings:",
        "",
    ]
    out += [f"- [{c.__name__}](#{c.__name__.lower()}) (`{c.__module__}`)" for c in classes]
    out.append("")
    for cls in classes:
        doc = inspect.getdoc(cls) or ""
        out += [f"## {cls.__name__}", "", f"`{cls.__module__}.{cls.__qualname__}`", ""]
        if doc:
            out += [doc, ""]
        rows = []
        for name in _own_fields(cls):
            field = cls.model_fields[name]  # type: ignore[attr-defined]
            rows.append([code(env_name(cls, name)), code(type_name(field.annotation))
                         + _field_bounds(field),
                         default_text(field), cell(field.description or "")])
        out += table(["variable", "type", "default", "meaning"], rows)
    rows = [[code(env), f"[`{name}`](cli.md#{_anchor(name)}) {code(_option_name(p))}",
             cell(getattr(p, "help", None) or "")]
            for name, cmd, _ in cli_commands() for p in cmd.params for env in _envvars(p)]
    if rows:
        out += ["## Command options read from the environment", "",
                "These are options of one `wangge` command, not service settings.", ""]
        out += table(["variable", "command and option", "meaning"], rows)
    return "\n".join(out)


def _option_name(param: Any) -> str:
    opts = list(getattr(param, "opts", ()) or ())
    return opts[0] if opts else param.name


# ----------------------------------------------------------------------------------------- CLI


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "list_commands")


def cli_commands() -> list[tuple[str, Any, Any]]:
    """Every (full name, command, context) of ``wangge``, depth first.

    Duck-typed: typer may bring its own copy of click, so no ``isinstance`` on click classes.
    """
    from typer.main import get_command

    from cli.main import app

    found: list[tuple[str, Any, Any]] = []

    def walk(cmd: Any, name: str, parent: Any) -> None:
        ctx = cmd.context_class(cmd, info_name=name.split()[-1], parent=parent)
        found.append((name, cmd, ctx))
        if _is_group(cmd):
            for sub in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, sub), f"{name} {sub}", ctx)

    walk(get_command(app), "wangge", None)
    return found


def _type_text(param: Any, ctx: Any) -> str:
    display = getattr(param, "display_type", None)
    if callable(display):
        text = str(display(ctx)).strip("<>")
        low, high = getattr(param, "min", None), getattr(param, "max", None)
        if text.endswith(" range") and (low is not None or high is not None):
            base = text.removesuffix(" range")
            if low is not None and high is not None:
                return f"{base} {low}..{high}"
            return f"{base} ≥ {low}" if low is not None else f"{base} ≤ {high}"
        return text
    return str(getattr(getattr(param, "type", None), "name", ""))


def _param_row(param: Any, ctx: Any) -> list[str]:
    if param.param_type_name == "argument":
        names = param.name.upper()
        kind = "argument" + ("" if param.required else ", optional")
    else:
        names = ", ".join(list(param.opts) + list(param.secondary_opts))
        kind = "flag" if getattr(param, "is_flag", False) else "option"
        if param.multiple:
            kind += ", repeatable"
        if param.required:
            kind += ", required"
    default = param.default
    if callable(default) or default is None or (param.multiple and not default):
        shown = ""
    elif isinstance(default, bool):
        shown = code(str(default).lower())
    elif isinstance(default, (list, tuple)):
        shown = code(" ".join(map(str, default)))
    else:
        shown = code(default)
    help_text = cell(getattr(param, "help", None) or "")
    envvar = _envvars(param)
    if envvar:
        help_text += " (env " + ", ".join(code(e) for e in envvar) + ")"
    return [code(names), cell(kind), code(_type_text(param, ctx)), shown, help_text]


def _envvars(param: Any) -> list[str]:
    envvar = getattr(param, "envvar", None)
    if not envvar:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)


def cli_page() -> str:
    """reference/cli.md."""
    commands = cli_commands()
    leaves = [n for n, c, _ in commands if not _is_group(c)]
    out = [
        "# The `wangge` command",
        "",
        "Generated from `cli.main:app` by `docs/gen_reference.py` when the site is built. "
        "`wangge --help` and `wangge COMMAND --help` print the same text in the terminal.",
        "",
        f"{len(leaves)} commands: " + ", ".join(f"[`{n}`](#{_anchor(n)})" for n in leaves),
        "",
    ]
    for name, cmd, ctx in commands:
        depth = name.count(" ")
        out += [f"{'#' * min(depth + 1, 4)} {name}" if depth else "## wangge", ""]
        if cmd.hidden:
            out += ["*(hidden)*", ""]
        text = inspect.cleandoc(cmd.help or "")
        if text:
            out += [text, ""]
        usage = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(),
                       " ".join(cmd.collect_usage_pieces(ctx)))
        out += ["```", f"{ctx.command_path} {usage}".rstrip(), "```", ""]
        params = [p for p in cmd.params if not getattr(p, "hidden", False) and p.name != "help"]
        if params:
            out += table(["parameter", "kind", "type", "default", "meaning"],
                         [_param_row(p, ctx) for p in params])
        if _is_group(cmd):
            rows = []
            for sub in cmd.list_commands(ctx):
                full = f"{name} {sub}"
                short = cmd.get_command(ctx, sub).get_short_help_str(limit=120)
                rows.append([f"[`{full}`](#{_anchor(full)})", cell(short)])
            out += table(["command", "what it does"], rows)
    return "\n".join(out)


def _anchor(title: str) -> str:
    """The id MkDocs' toc extension gives a heading (default slugify)."""
    import unicodedata

    s = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    s = re.sub(r"[^\w\s-]", "", s).strip().lower()
    return re.sub(r"[-\s]+", "-", s)


# ---------------------------------------------------------------------------------------- HTTP


def build_app() -> Any:
    """The service's app, built without a database (the lifespan never runs)."""
    from api.main import create_app

    return create_app()


def all_routes(app: Any) -> list[Any]:
    """Every route of ``app``, also those inside included routers (newer FastAPI keeps an
    included router as one entry of ``app.routes``; ``iter_route_contexts`` walks into it)."""
    import fastapi.routing

    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    return [c.route for c in walk(app.routes)] if walk else list(app.routes)


def _unlisted_routes(app: Any) -> list[str]:
    """Routes the OpenAPI schema leaves out (the schema and its viewers, mounts)."""
    out = []
    for route in all_routes(app):
        if getattr(route, "include_in_schema", True) and hasattr(route, "operation_id"):
            continue
        methods = ", ".join(sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}))
        kind = f"`{methods}`" if methods else "mount"
        out.append(f"| {kind} | `{route.path}` | {cell(getattr(route, 'name', '') or '')} |")
    return out


def _who(operation_id: str | None) -> str:
    """Who may call an operation, read from ``api.policy.POLICY``."""
    try:
        from api.policy import POLICY
    except ImportError:  # pragma: no cover - the policy module moved
        return ""
    rule = POLICY.get(operation_id or "")
    if rule is None:
        return "not in the policy table: refused"
    if getattr(rule, "public", False):
        return "anyone (public)"
    parts = []
    roles = sorted(set(getattr(rule, "roles", ()) or ()) - {"admin"})
    parts.append("roles " + ", ".join(roles + ["admin"]) if roles else "admin")
    scopes = sorted(getattr(rule, "key_scopes", ()) or ())
    if scopes:
        parts.append("API keys with scope " + " or ".join(scopes))
    return "; ".join(parts)


def _number(value: Any) -> str:
    """1.0 → 1, 0.5 → 0.5."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _schema_text(schema: dict[str, Any] | None) -> str:
    """A one-line description of a JSON schema (refs by name)."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " or ".join(_schema_text(s) for s in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema_text(schema.get('items'))}"
    fmt = schema.get("format")
    text = f"{kind} ({fmt})" if fmt else str(kind)
    bounds = [f"{op} {_number(schema[key])}" for key, op in (
        ("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
        ("minLength", "length ≥"), ("maxLength", "length ≤")) if key in schema]
    if "enum" in schema:
        bounds.append("one of " + ", ".join(map(str, schema["enum"])))
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _default(schema: dict[str, Any]) -> str:
    """", default `x`" when a JSON schema declares a default."""
    if "default" not in schema or schema["default"] is None:
        return ""
    return ", default " + code(json.dumps(schema["default"], ensure_ascii=False))


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    op_id = op.get("operationId")
    out = [f"### {method.upper()} {path}", ""]
    if op.get("summary"):
        out += [cell(op["summary"]), ""]
    out += [f"- operation id: `{op_id}`", f"- who may call: {cell(_who(op_id))}"]
    if op.get("deprecated"):
        out.append("- **deprecated**")
    out.append("")
    if op.get("description"):
        out += [inspect.cleandoc(op["description"]), ""]
    params = op.get("parameters", [])
    if params:
        rows = [[code(p["name"]), p.get("in", ""), "yes" if p.get("required") else "no",
                 cell(_schema_text(p.get("schema"))) + _default(p.get("schema") or {}),
                 cell(p.get("description") or p.get("schema", {}).get("description", ""))]
                for p in params]
        out += table(["parameter", "in", "required", "type", "meaning"], rows)
    body = op.get("requestBody")
    if body:
        kinds = [f"`{ct}`: {_schema_text(c.get('schema'))}"
                 for ct, c in body.get("content", {}).items()]
        req = "required" if body.get("required") else "optional"
        out += [f"Body ({req}): " + "; ".join(kinds), ""]
    rows = []
    for status, resp in op.get("responses", {}).items():
        content = resp.get("content") or {}
        shape = "; ".join(f"`{ct}` {_schema_text(c.get('schema'))}" for ct, c in content.items())
        rows.append([code(status), cell(resp.get("description", "")), shape])
    if rows:
        out += table(["status", "meaning", "body"], rows)
    return out


def _schema_section(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f"### {name}", ""]
    if schema.get("description"):
        out += [cell(schema["description"]), ""]
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    if props:
        rows = [[code(p), cell(_schema_text(s)) + _default(s), "yes" if p in required else "no",
                 cell(s.get("description", ""))] for p, s in props.items()]
        out += table(["field", "type", "required", "meaning"], rows)
    elif "enum" in schema:
        out += ["One of " + ", ".join(code(v) for v in schema["enum"]), ""]
    else:
        out += [f"Type: {cell(_schema_text(schema))}", ""]
    return out


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of an OpenAPI schema, in the schema's order."""
    return [(m, path, op) for path, item in schema.get("paths", {}).items()
            for m, op in item.items() if m in METHODS]


def http_page() -> str:
    """reference/http.md."""
    app = build_app()
    schema = app.openapi()
    ops = operations(schema)
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for m, path, op in ops:
        by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((m, path, op))
    info = schema.get("info", {})
    out = [
        "# HTTP API",
        "",
        f"Generated from the OpenAPI schema of `api.main:create_app` ({info.get('title', '')}, "
        f"version {info.get('version', '')}, OpenAPI {schema.get('openapi', '')}) by "
        "`docs/gen_reference.py` when the site is built. A running service shows the same "
        "schema at `/docs` and `/openapi.json`.",
        "",
        "Credentials: a bearer token from `POST /v1/auth/token`, or an API key as the "
        "`X-API-Key` header or `?api_key=`. \"Who may call\" comes from the access policy "
        "(`api/policy.py`); admins may call everything. Errors are JSON "
        "`{error, detail, problems: [{field, reason}]}` (Open311 routes: "
        "`[{code, description}]`).",
        "",
        f"{len(ops)} operations:",
        "",
    ]
    rows = [[code(m.upper()), f"[`{p}`](#{_anchor(f'{m} {p}')})", code(op.get("operationId")),
             cell(op.get("summary", ""))] for m, p, op in ops]
    out += table(["method", "path", "operation id", "what"], rows)
    for tag, tag_ops in by_tag.items():
        out += [f"## {tag}", ""]
        for m, path, op in tag_ops:
            out += _operation(m, path, op)
    unlisted = _unlisted_routes(app)
    if unlisted:
        out += ["## Routes outside the schema", "",
                "Served without an operation in the OpenAPI schema and open to anyone (they "
                "are not under the access policy). Routes mounted at start-up (the map "
                "assets under `/static/vendor`) are not listed.", "",
                "| method | path | name |", "|---|---|---|", *unlisted, ""]
    components = schema.get("components", {}).get("schemas", {})
    if components:
        out += ["## Schemas", ""]
        for name in sorted(components):
            out += _schema_section(name, components[name])
    return "\n".join(out)


# ------------------------------------------------------------------------------- entry points

def benchmarks_page() -> str:
    """benchmarks.md: bench/README.md, so the figures have one source."""
    return (ROOT / "bench" / "README.md").read_text(encoding="utf-8")


PAGES = {
    "reference/settings.md": settings_page,
    "reference/cli.md": cli_page,
    "reference/http.md": http_page,
    "benchmarks.md": benchmarks_page,
}


def pages() -> dict[str, str]:
    """Every generated page: path inside docs/ → markdown."""
    return {path: make() for path, make in PAGES.items()}


# A page loads what its script/link/img/iframe/source/video/audio tags point at, and what its
# styles import; anchors (<a href>) are only followed when clicked.
_LOADED = re.compile(
    r"<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*?\b(?:src|href|srcset)\s*=\s*"
    r"[\"']?((?:https?:)?//[^\"'\s>]+)", re.IGNORECASE)
_CSS_URL = re.compile(r"(?:url\(|@import\s+)[\"']?((?:https?:)?//[^\"')\s]+)", re.IGNORECASE)


def external_loads(site_dir: Path) -> list[str]:
    """Every resource a built page or stylesheet would load from another host.

    Material's bundle loads mermaid from a CDN only when a page holds a ``mermaid`` diagram, so
    such a diagram counts as an external load too.
    """
    found = []
    for path in sorted(site_dir.rglob("*")):
        if path.suffix not in (".html", ".css"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        pattern = _LOADED if path.suffix == ".html" else _CSS_URL
        found += [f"{path.relative_to(site_dir)}: {m}" for m in pattern.findall(text)]
        if path.suffix == ".html" and 'class="mermaid"' in text:
            found.append(f"{path.relative_to(site_dir)}: a mermaid diagram (loaded from a CDN)")
    return found


def on_post_build(config: Any) -> None:
    """MkDocs hook: the site must work offline; fail the build when a page loads from outside."""
    from mkdocs.exceptions import PluginError

    outside = external_loads(Path(config["site_dir"]))
    if outside:
        raise PluginError("pages load from the internet:\n  " + "\n  ".join(outside))


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages to the site."""
    from mkdocs.structure.files import File

    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "reference-out")
    for rel, text in pages().items():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        print(dest)
