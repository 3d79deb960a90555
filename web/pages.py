"""The console's pages and the offline /docs and /redoc.

Each page is an HTML shell rendered from ``web/templates`` with the message catalogue; its
script reads and writes through the HTTP API. A page for some roles checks the session cookie
on the server: without one it sends the browser to the sign-in page, with a role outside the
page's list it answers 403. The data behind every page is refused by the API itself anyway.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.policy import PolicyRoute
from api.routers.console import HOME
from api.security import session_principal
from geo.auth.service import Principal
from maps import assets
from web.messages import CHANGES, ROLES, catalogue, t

HERE = Path(__file__).resolve().parent
STATIC_URL = "/console/static"
VENDOR_URL = "/static/vendor"
_env = Environment(loader=FileSystemLoader(HERE / "templates"),
                   autoescape=select_autoescape(["html"]))
_env.globals["changes"] = CHANGES  # the diff's legend (边界历史)

# page -> (template, title key, roles admitted besides admin; None: anyone, signed in or not)
PAGES: dict[str, tuple[str, str, frozenset[str] | None]] = {
    "login": ("login.html", "sign_in", None),
    "account": ("account.html", "account", frozenset(ROLES)),
    "commander": ("commander.html", "commander", frozenset({"commander"})),
    "worker": ("desk.html", "worker", frozenset({"grid_worker"})),
    "department": ("desk.html", "department", frozenset({"department_staff"})),
    "resident": ("resident.html", "resident", frozenset({"resident"})),
    "analyst": ("analyst.html", "analyst", frozenset({"planner", "commander"})),
    "planner": ("planner.html", "planner", frozenset({"planner"})),
    "planner_history": ("planner_history.html", "planner_history",
                        frozenset({"planner", "commander"})),
}
# The views offered in the header, by role.
NAV = {role: [p for p, (_, _, roles) in PAGES.items()
              if roles is not None and p != "account" and (role == "admin" or role in roles)]
       for role in ROLES}

router = APIRouter(route_class=PolicyRoute, include_in_schema=False)


def install(app: FastAPI) -> None:
    """Serve the console's scripts and styles under /console/static."""
    app.mount(STATIC_URL, StaticFiles(directory=HERE / "static"), name="console_static")


def _render(template: str, principal: Principal | None, **ctx: object) -> str:
    return _env.get_template(template).render(
        t=t, me=principal, roles=ROLES, nav=NAV.get(principal.role or "", []) if principal
        else [], static=STATIC_URL, vendor=VENDOR_URL,
        catalogue=json.dumps(catalogue(), ensure_ascii=False).replace("</", "<\\/"), **ctx)


def _who(request: Request) -> Principal | None:
    return session_principal(request, request.app.state.auth_settings)


@router.get("/console", response_class=HTMLResponse)
def landing(request: Request) -> Response:
    """Each role to its own view; the sign-in page for a visitor."""
    me = _who(request)
    if me is None:
        return RedirectResponse("/console/login", status_code=303)
    return RedirectResponse(HOME.get(me.role or "", "/console/account"), status_code=303)


@router.get("/console/{page}", response_class=HTMLResponse)
def page(page: str, request: Request) -> Response:
    spec = PAGES.get(page)
    if spec is None:
        return HTMLResponse(_render("error.html", _who(request), title=t("error"),
                                    message="404"), status_code=404)
    template, title, roles = spec
    me = _who(request)
    if roles is not None and me is None:
        return RedirectResponse(f"/console/login?next={quote(request.url.path)}",
                                status_code=303)
    if roles is not None and me is not None and me.role != "admin" and me.role not in roles:
        return HTMLResponse(_render("error.html", me, title=t("forbidden"),
                                    message=t("forbidden")), status_code=403)
    return HTMLResponse(_render(template, me, title=t(title), page=page),
                        headers={"Cache-Control": "no-store"})


@router.get("/docs", response_class=HTMLResponse)
def docs() -> HTMLResponse:
    """Swagger UI from the installed assets (no CDN)."""
    return HTMLResponse(_render("docs.html", None, title="wangge API"))


# Redoc's bundle shows its maker's logo from their CDN; the page serves it with a blank image.
_REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_BLANK_SVG = "data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg%22/%3E"


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    return (assets.VENDOR_DIR / "redoc" / "redoc.standalone.js").read_text(
        encoding="utf-8").replace(_REDOC_LOGO, _BLANK_SVG).encode()


@router.get("/console/vendor/redoc.js")
def redoc_bundle() -> Response:
    """The Redoc bundle, nothing fetched from outside."""
    return Response(_redoc_bundle(), media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    """Redoc from the installed assets (no CDN)."""
    return HTMLResponse(_render("redoc.html", None, title="wangge API"))
