"""What the routes depend on, as ``Annotated`` aliases: handlers read like their signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from serving.security import admin_token_matches
from serving.services import Services


def get_services(request: Request) -> Services:
    """The app's services, set on ``app.state`` by its lifespan."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_admin_token(services: ServicesDep, x_admin_token: Annotated[str | None, Header()] = None) -> None:
    """401 unless X-Admin-Token equals the configured admin token (with none configured, always 401)."""
    if not admin_token_matches(x_admin_token, services.settings.admin_token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid X-Admin-Token header is required")
