"""Accounts and keys: the OAuth2 password flow, who am I, and admin-only creation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import CONNECTION
from api.policy import PolicyRoute, caller
from api.security import (
    client_address,
    current_principal,
    forget_credentials,
    password_sign_in,
)
from geo.auth import accounts
from geo.auth.service import (
    AuthSettings,
    Principal,
    create_api_key,
    create_user,
    issue_token,
    new_api_key,
)

router = APIRouter(prefix="/v1/auth", tags=["auth"], route_class=PolicyRoute)


class PasswordForm:
    """The OAuth2 password flow's form (as FastAPI's ``OAuth2PasswordRequestForm``), with the
    length of each field limited and declared."""

    def __init__(
        self,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=256, json_schema_extra={"format": "password"})],
        grant_type: Annotated[str | None, Form(pattern="^password$", max_length=8)] = None,
        scope: Annotated[str, Form(max_length=256)] = "",
        client_id: Annotated[str | None, Form(max_length=256)] = None,
        client_secret: Annotated[str | None, Form(max_length=256)] = None,
    ) -> None:
        self.username, self.password = username, password
        self.scopes = scope.split()


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


class Me(BaseModel):
    kind: str
    name: str
    role: str | None
    area_code: str | None
    department_id: int | None
    scopes: list[str]
    role: str | None = Field(None, description="The role the key acts with, if any.")


class NewUser(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=1, max_length=256)
    role: Literal["resident", "grid_worker", "department_staff", "planner", "commander", "admin"]
    area_code: str | None = Field(default=None, pattern=r"^[0-9]{6}([0-9]{3}){0,3}$",
                                  max_length=15)
    department_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class CreatedUser(BaseModel):
    id: int = Field(description="The new account's id.")
    username: str
    role: str


class CreatedApiKey(BaseModel):
    name: str
    api_key: str = Field(description="The key itself: shown this once, stored only as a hash.")
    scopes: list[str]


class NewApiKey(BaseModel):
    name: str = Field(min_length=2, max_length=64)
    scopes: list[Literal["lookup", "open311"]] = Field(["lookup", "open311"], max_length=2)
    rate_per_minute: int = Field(default=6000, ge=1, le=10_000_000)
    role: Literal["grid_worker", "planner", "commander"] | None = Field(
        None, description="The key acts as a user of this role in ``area_code`` (e.g. a GIS "
        "client reading layers); without, it has only its scopes.")
    area_code: str | None = Field(None, pattern=r"^[0-9]{6}([0-9]{3}){0,3}$", max_length=15,
                                  description="The area of a key with a role.")


class UserAccount(BaseModel):
    id: int
    username: str
    role: str
    area_code: str | None = Field(None, description="The area the account works in.")
    department_id: int | None = None
    active: bool
    created_at: datetime
    disabled_at: datetime | None = None
    tokens_valid_after: datetime | None = Field(
        None, description="Tokens issued before this instant are refused.")


class UserActive(BaseModel):
    id: int
    username: str
    active: bool


class TokensRevoked(BaseModel):
    id: int
    username: str
    tokens_valid_after: datetime | None = Field(
        None, description="Tokens issued before this instant are refused.")


class ApiKeyInfo(BaseModel):
    name: str
    key_prefix: str = Field(description="The key's first characters.")
    scopes: list[str]
    role: str | None = None
    area_code: str | None = None
    rate_per_minute: int = Field(description="Requests allowed per minute.")
    created_at: datetime
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyRevoked(BaseModel):
    name: str
    revoked_at: datetime


class RotatedApiKey(BaseModel):
    name: str
    api_key: str = Field(description="The new key: shown this once, stored only as a hash.")
    scopes: list[str]
    role: str | None = None


@router.post("/token", response_model=Token, operation_id="issue_token",
             summary="OAuth2 password flow: exchange username and password for a JWT")
def token(
    request: Request,
    form: PasswordForm = Depends(),
) -> Token:
    settings: AuthSettings = request.app.state.auth_settings
    principal = password_sign_in(request.app.state.engine, form.username, form.password,
                                 client_address(request), settings)
    return Token(access_token=issue_token(principal, settings))


@router.get("/me", response_model=Me, operation_id="who_am_i", summary="The caller's identity")
def me(principal: Principal = Depends(current_principal)) -> Me:
    return Me(kind=principal.kind, name=principal.name, role=principal.role,
              area_code=principal.area_code, department_id=principal.department_id,
              scopes=list(principal.scopes))


def _actor(request: Request) -> str | None:
    """Who acts, for the audit trail (``kind:name``); None without a signed-in caller."""
    who = caller(request)
    return f"{who.kind}:{who.name}" if who is not None else None


@router.post("/users", status_code=201, operation_id="create_user", response_model=CreatedUser,
             summary="Create a user account (admin)")
def new_user(
    body: NewUser,
    request: Request,
    conn: Connection = CONNECTION,
) -> dict[str, Any]:
    uid = create_user(conn, body.username, body.password, body.role, area_code=body.area_code,
                      department_id=body.department_id,
                      settings=request.app.state.auth_settings, actor=_actor(request))
    return {"id": uid, "username": body.username, "role": body.role}


@router.post("/api-keys", status_code=201, operation_id="create_api_key",
             response_model=CreatedApiKey,
             summary="Create an API key for another system (admin); the key is shown once")
def make_api_key(
    body: NewApiKey,
    request: Request,
    conn: Connection = CONNECTION,
) -> dict[str, Any]:
    key = create_api_key(conn, body.name, scopes=tuple(body.scopes),
                         rate_per_minute=body.rate_per_minute, role=body.role,
                         area_code=body.area_code, actor=_actor(request))
    return {"name": body.name, "api_key": key, "scopes": body.scopes, "role": body.role}


@router.get("/users", operation_id="list_users", response_model=list[UserAccount],
            summary="List accounts (admin); never their passwords")
def users(conn: Connection = CONNECTION) -> Any:
    return accounts.list_users(conn)


Username = Annotated[str, Path(max_length=64)]


@router.post("/users/{username}/disable", operation_id="disable_user",
             response_model=UserActive,
             summary="Disable an account (admin); its tokens stop working at once")
def disable(username: Username, request: Request, conn: Connection = CONNECTION) -> Any:
    out = accounts.set_active(conn, username, False)
    forget_credentials(request.app)
    return out


@router.post("/users/{username}/enable", operation_id="enable_user",
             response_model=UserActive, summary="Enable a disabled account (admin)")
def enable(username: Username, request: Request, conn: Connection = CONNECTION) -> Any:
    out = accounts.set_active(conn, username, True)
    forget_credentials(request.app)
    return out


@router.post("/users/{username}/revoke-tokens", operation_id="revoke_user_tokens",
             response_model=TokensRevoked,
             summary="Refuse every token issued to an account so far (admin)")
def revoke_user_tokens(username: Username, request: Request,
                       conn: Connection = CONNECTION) -> Any:
    out = accounts.revoke_tokens(conn, username)
    forget_credentials(request.app)
    return out


@router.get("/api-keys", operation_id="list_api_keys", response_model=list[ApiKeyInfo],
            summary="List API keys (admin): name, first characters, scopes, role, state")
def api_keys(conn: Connection = CONNECTION) -> Any:
    return accounts.list_api_keys(conn)


@router.post("/api-keys/{name}/revoke", operation_id="revoke_api_key",
             response_model=ApiKeyRevoked, summary="Revoke an API key (admin)")
def revoke_key(name: Annotated[str, Path(max_length=64)], request: Request,
               conn: Connection = CONNECTION) -> Any:
    out = accounts.revoke_api_key(conn, name)
    forget_credentials(request.app)
    return out


@router.post("/api-keys/{name}/rotate", operation_id="rotate_api_key",
             response_model=RotatedApiKey,
             summary="Give an API key a new value (admin); the old one stops; shown once")
def rotate_key(name: Annotated[str, Path(max_length=64)], request: Request,
               conn: Connection = CONNECTION) -> Any:
    key, hashed = new_api_key()
    out = accounts.rotate_api_key(conn, name, key, hashed)
    forget_credentials(request.app)
    return out
