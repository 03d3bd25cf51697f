"""The prediction API: the registry's champion, features from the marts, every answer logged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.settings import Settings, get_settings
from serving.api import api_router
from serving.errors import add_error_handlers
from serving.limits import BodySizeLimit
from serving.services import Services


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, with its services started and stopped by ``lifespan``."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(settings)
        app.state.services = services
        services.start()
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(
        title="Flight delay predictions",
        summary=(
            f"Will this flight leave more than {settings.late_departure_minutes} minutes late?"
            " Served from the registry's champion."
        ),
        version="1.0.0",
        lifespan=lifespan,
    )
    app.include_router(api_router)
    add_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.serve_max_body_bytes)
    return app
