"""Administration: actions that need the admin token."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from serving.deps import ServicesDep, require_admin_token
from serving.schemas import ReloadResult
from warehouse.online import FeaturesUnavailable

# Tagged "operations" like /health and /ready: the published OpenAPI tags stay as they were.
router = APIRouter(prefix="/admin", tags=["operations"], dependencies=[Depends(require_admin_token)])


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses={503: {"description": "No published online features could be loaded; nothing changed."}},
)
def reload(services: ServicesDep) -> ReloadResult:
    """Load the current champion and the latest online features now (requires the admin token)."""
    try:
        return services.reload()
    except FeaturesUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
