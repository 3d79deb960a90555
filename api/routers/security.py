"""Accounts and keys: the OAuth2 password flow, who am I, and admin-only creation."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.dependencies import get_connection
from api.policy import PolicyRoute
from api.security import current_principal, require
from geo.auth.service import (
    Principal,
    authenticate,
    create_api_key,
    create_user,
    issue_token,
)

router = APIRouter(prefix="/v1/auth", tags=["auth"], route_class=PolicyRoute)


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


class NewUser(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=1, max_length=256)
    role: Literal["resident", "grid_worker", "department_staff", "planner", "commander", "admin"]
    area_code: str | None = Field(default=None, pattern=r"^[0-9]{6}([0-9]{3}){0,3}$")
    department_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class NewApiKey(BaseModel):
    name: str = Field(min_length=2, max_length=64)
    scopes: list[Literal["lookup", "open311"]] = ["lookup", "open311"]
    rate_per_minute: int = Field(default=6000, ge=1, le=10_000_000)


@router.post("/token", response_model=Token, operation_id="issue_token",
             summary="OAuth2 password flow: exchange username and password for a JWT")
def token(
    request: Request,
    form: OAuth2PasswordRequestForm = Depends(),
    conn: Connection = Depends(get_connection),
) -> Token:
    principal = authenticate(conn, form.username, form.password)
    return Token(access_token=issue_token(principal, request.app.state.auth_settings))


@router.get("/me", response_model=Me, operation_id="who_am_i", summary="The caller's identity")
def me(principal: Principal = Depends(current_principal)) -> Me:
    return Me(kind=principal.kind, name=principal.name, role=principal.role,
              area_code=principal.area_code, department_id=principal.department_id,
              scopes=list(principal.scopes))


@router.post("/users", status_code=201, operation_id="create_user",
             summary="Create a user account (admin)")
def new_user(
    body: NewUser,
    request: Request,
    who: Principal = Depends(require("admin")),
    conn: Connection = Depends(get_connection),
) -> dict:
    uid = create_user(conn, body.username, body.password, body.role, area_code=body.area_code,
                      department_id=body.department_id,
                      settings=request.app.state.auth_settings, actor=f"{who.kind}:{who.name}")
    return {"id": uid, "username": body.username, "role": body.role}


@router.post("/api-keys", status_code=201, operation_id="create_api_key",
             summary="Create an API key for another system (admin); the key is shown once")
def new_api_key(
    body: NewApiKey,
    who: Principal = Depends(require("admin")),
    conn: Connection = Depends(get_connection),
) -> dict:
    key = create_api_key(conn, body.name, scopes=tuple(body.scopes),
                         rate_per_minute=body.rate_per_minute, actor=f"{who.kind}:{who.name}")
    return {"name": body.name, "api_key": key, "scopes": body.scopes}
