"""Who may call which operation: one table, keyed by each route's ``operation_id``.

Every router is built with ``route_class=PolicyRoute``: before FastAPI resolves a handler's
parameters, the route resolves the caller, stores it in ``request.state.principal`` for the
handlers' own area-scope checks, and admits or refuses the call: 401 for an anonymous caller
where credentials are needed, 403 for a role or key outside the rule. It is plain code in the
route, not a FastAPI dependency: a global dependency cost more per request than the whole
point lookup. Routes must be listed; an unlisted one is refused (deny by default), and tests
check that every route is listed and is a ``PolicyRoute``. ``document_policy`` writes the same
table into the OpenAPI schema as each operation's ``security``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from api.security import resolve_principal
from geo.auth.service import EVERYTHING, Principal, Scope
from geo.core.errors import Forbidden, Unauthenticated

ALL_ROLES = frozenset(
    {"resident", "grid_worker", "department_staff", "planner", "commander", "admin"}
)
STAFF = frozenset({"grid_worker", "department_staff", "planner", "commander"})


@dataclass(frozen=True)
class Rule:
    """Admit these user roles (admin always) and API keys with one of these scopes."""

    roles: frozenset[str] = frozenset()
    key_scopes: frozenset[str] = frozenset()
    public: bool = False


PUBLIC = Rule(public=True)
ANY_USER = Rule(roles=ALL_ROLES)
ADMIN = Rule()
STAFF_ONLY = Rule(roles=STAFF)
READERS = Rule(roles=frozenset({"grid_worker", "planner", "commander"}))
ANALYSTS = Rule(roles=frozenset({"planner", "commander"}))
PLANNERS = Rule(roles=frozenset({"planner"}))
COMMANDERS = Rule(roles=frozenset({"commander"}))
LOOKUP = Rule(roles=ALL_ROLES, key_scopes=frozenset({"lookup"}))
REPORTERS = Rule(roles=ALL_ROLES, key_scopes=frozenset({"open311"}))
OGC_READ = Rule(roles=ALL_ROLES, key_scopes=frozenset({"ogc"}))
CASE_WORKERS = Rule(roles=frozenset({"grid_worker", "department_staff", "commander"}))

POLICY: dict[str, Rule] = {
    # accounts
    "issue_token": PUBLIC,
    "who_am_i": PUBLIC,
    "create_user": ADMIN,
    "create_api_key": ADMIN,
    "list_users": ADMIN,
    "disable_user": ADMIN,
    "enable_user": ADMIN,
    "revoke_user_tokens": ADMIN,
    "list_api_keys": ADMIN,
    "revoke_api_key": ADMIN,
    "rotate_api_key": ADMIN,
    # point lookup: other systems (API key) and every signed-in user
    "ping": PUBLIC,
    "lookup_point": LOOKUP,
    "lookup_batch": LOOKUP,
    # layers
    "get_layer": READERS,
    "import_layers": PLANNERS,
    # service circles, coverage, siting
    "create_circles_run": ANALYSTS,
    "create_coverage_run": ANALYSTS,
    "create_siting_run": ANALYSTS,
    "list_analysis_runs": ANALYSTS,
    "get_analysis_run": ANALYSTS,
    "get_circles": ANALYSTS,
    "get_coverage_summary": ANALYSTS,
    "get_uncovered_buildings": ANALYSTS,
    "get_building_distances": ANALYSTS,
    "get_life_circle_completeness": ANALYSTS,
    "get_siting_run": ANALYSTS,
    # incidents (own API)
    "report_incident": REPORTERS,
    "attach_incident_photo": REPORTERS,
    # residents reach their own reports only (handlers pass ``scope_of(request)`` down)
    "list_incidents": ANY_USER,
    "overdue_incidents": STAFF_ONLY,
    "incident_stats": STAFF_ONLY,
    "get_incident": ANY_USER,
    "get_incident_photo": ANY_USER,
    "transition_incident": Rule(roles=CASE_WORKERS.roles | {"resident"}),
    "reroute_incident": Rule(roles=frozenset({"grid_worker", "commander"})),
    "urge_incident": COMMANDERS,
    "escalate_incidents": COMMANDERS,
    "supervise_incident": COMMANDERS,
    "supervise_overdue_incidents": COMMANDERS,
    "incident_rollup": STAFF_ONLY,
    "list_incident_categories": PUBLIC,
    "list_departments": PUBLIC,
    "set_incident_routing": PLANNERS,
    "set_incident_sla": PLANNERS,
    # Open311 GeoReport v2: public reads carry no personal data
    "open311_discovery": PUBLIC,
    "open311_services": PUBLIC,
    "open311_service_definition": PUBLIC,
    "open311_requests": PUBLIC,
    "open311_request": PUBLIC,
    "open311_post_request": REPORTERS,
    # planners redraw grids; commanders may read the history
    "planning_split": PLANNERS,
    "planning_merge": PLANNERS,
    "planning_reshape": PLANNERS,
    "planning_reassign": PLANNERS,
    "planning_import": PLANNERS,
    "planning_draft": PLANNERS,
    "planning_accept_draft": PLANNERS,
    "planning_diff": ANALYSTS,
    "planning_diff_features": ANALYSTS,
    "planning_undo": PLANNERS,
    "planning_preview_undo": PLANNERS,
    "planning_cancel_generation": PLANNERS,
    "planning_preview_split": PLANNERS,
    "planning_preview_merge": PLANNERS,
    "planning_preview_reshape": PLANNERS,
    "planning_preview_reassign": PLANNERS,
    "planning_preview_accept_draft": PLANNERS,
    # OGC API Features and Tiles (/ogc): metadata is open; reading needs a user (the handler
    # admits residents and department staff to the incidents only, scoped) or an "ogc" key;
    # edits of grids are planning changes
    "ogc_landing": PUBLIC,
    "ogc_conformance": PUBLIC,
    "ogc_openapi": PUBLIC,
    "ogc_tile_matrix_sets": PUBLIC,
    "ogc_tile_matrix_set": PUBLIC,
    "ogc_collections": OGC_READ,
    "ogc_collection": OGC_READ,
    "ogc_queryables": OGC_READ,
    "ogc_items": OGC_READ,
    "ogc_item": OGC_READ,
    "ogc_collection_tilesets": OGC_READ,
    "ogc_collection_tileset": OGC_READ,
    "ogc_tilejson": OGC_READ,
    "ogc_tile": OGC_READ,
    "ogc_create_item": PLANNERS,
    "ogc_replace_item": PLANNERS,
    "ogc_update_item": PLANNERS,
    "ogc_delete_item": PLANNERS,
    # the browser console (web/): its session cookie, own account, dashboards, exports
    "console_sign_in": PUBLIC,
    "console_sign_out": PUBLIC,
    "change_password": ANY_USER,
    "register_resident": PUBLIC,
    "console_counts": STAFF_ONLY,
    "console_trend": STAFF_ONLY,
    "console_points": STAFF_ONLY,
    "console_basemap": ANY_USER,
    "console_grid_team": READERS,
    "console_station_kinds": ANY_USER,
    "console_export": ANALYSTS,
    "planning_generations": ANALYSTS,
    # maps for the command centre
    "map_grids": READERS,
    "map_coverage": READERS,
    "map_incidents": READERS,
}


def admits(rule: Rule, principal: Principal) -> bool:
    if rule.public:
        return True
    if principal.kind == "api_key":
        return bool(rule.key_scopes & set(principal.scopes))
    if principal.kind == "user":
        return principal.role == "admin" or principal.role in rule.roles
    return False


async def enforce_policy(request: Request, operation: str | None) -> None:
    """Resolve the caller into ``request.state.principal`` (once a request: a layer in front
    of the routing may have resolved and counted them already) and admit them to ``operation``
    by ``POLICY``, or raise 401/403."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        principal = await resolve_principal(request)
        request.state.principal = principal
    rule = POLICY.get(operation or "")
    if rule is None:
        raise Forbidden(f"operation '{operation}' is not open to anyone")
    if admits(rule, principal):
        return
    if principal.kind == "anonymous":
        raise Unauthenticated("authentication required: a bearer token or an API key")
    raise Forbidden(f"{principal.kind} '{principal.name}' ({principal.role or 'no role'}) "
                    f"may not call '{operation}'")


class PolicyRoute(APIRoute):
    """An ``APIRoute`` that enforces ``POLICY`` before its handler (when access is enforced:
    ``AuthSettings.enforce_access``). Routes left out of the schema are not checked."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.include_in_schema:
            return handler
        operation = self.operation_id

        async def admitted(request: Request) -> Response:
            if request.app.state.auth_settings.enforce_access:
                await enforce_policy(request, operation)
            return await handler(request)

        return admitted


SECURITY_SCHEMES = {
    "OAuth2PasswordBearer": {"type": "oauth2", "flows": {"password": {
        "tokenUrl": "/v1/auth/token", "scopes": {}}}},
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    "HTTPBasic": {"type": "http", "scheme": "basic",
                  "description": "Username and password, or any username and an API key as "
                  "the password (GIS clients: QGIS, GDAL)."},
}


def document_policy(app: FastAPI) -> None:
    """Declare in ``app``'s OpenAPI schema the credentials each operation takes, from
    ``POLICY``: none for public ones, a bearer token for users, an API key where keys may."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for item in schema.get("paths", {}).values():
            for op in item.values():
                rule = POLICY.get(op.get("operationId", "")) if isinstance(op, dict) else None
                if rule is None or rule.public:
                    continue
                op["security"] = [{"OAuth2PasswordBearer": []}, {"HTTPBasic": []}] + (
                    [{"APIKeyHeader": []}, {"APIKeyQuery": []}] if rule.key_scopes else [])
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def caller(request: Request) -> Principal | None:
    """The principal the policy resolved for this request (None when access is not enforced)."""
    return getattr(request.state, "principal", None)


def require_area(request: Request, code: str | None, *, field: str = "code") -> None:
    """Refuse (403) a signed-in user whose area scope does not cover area ``code``.

    Codes nest by prefix (district 6 ⊂ street 9 ⊂ community 12 ⊂ grid 15 digits). Admins, users
    without an area, API keys and calls with access enforcement off pass: the operation's rule in
    ``POLICY`` already admitted them.
    """
    principal = caller(request)
    if principal is None or principal.kind != "user" or principal.covers(code):
        return
    raise Forbidden(f"{field} {code or '(none)'} lies outside the area {principal.area_code} "
                    f"of {principal.role} '{principal.name}'")


# The steps of the loop a resident takes on their own report: 评价, rating the result.
RESIDENT_STEPS = frozenset({"rated"})


def scope_of(request: Request) -> Scope:
    """The rows the caller may reach, for the ``geo`` functions to apply in SQL.

    resident: the reports they made; department staff: cases routed to their department (and
    inside their area, if they have one); grid worker, planner, commander: their area. Admins,
    API keys (already limited by key scope) and calls with enforcement off reach everything.
    """
    p = caller(request)
    if p is None or p.kind != "user" or p.role == "admin":
        return EVERYTHING
    if p.role == "resident":
        return Scope(reporter_user_id=p.user_id if p.user_id is not None else -1)
    return Scope(area=p.area_code,
                 department_id=p.department_id if p.role == "department_staff" else None)


def _own_area(request: Request) -> str | None:
    p = caller(request)
    return p.area_code if p is not None and p.kind == "user" and p.role != "admin" else None


def area_within(request: Request, within: str | None, *, field: str = "within") -> str | None:
    """The area prefix a read is restricted to: the narrower of ``within`` and the caller's own
    area (None: everything). 403 when the two are disjoint."""
    own = _own_area(request)
    if within is not None and own is not None and own.startswith(within):
        return own  # a wider filter than the caller's area is narrowed to it
    if within is not None:
        require_area(request, within, field=field)
        return within
    return own


def require_overlap(request: Request, **codes: str | None) -> None:
    """Refuse (403) an area filter (field=code) disjoint from the caller's area; a wider one
    is fine, since the caller's scope narrows the rows anyway."""
    for field, code in codes.items():
        if code is not None:
            area_within(request, code, field=field)


def require_step(request: Request, to_status: str) -> None:
    """Refuse (403) a resident moving a case to any step but their own (rating it)."""
    p = caller(request)
    if p is not None and p.kind == "user" and p.role == "resident" \
            and to_status not in RESIDENT_STEPS:
        raise Forbidden(f"a resident may only take the steps {', '.join(sorted(RESIDENT_STEPS))} "
                        f"of their own report, not '{to_status}'")
