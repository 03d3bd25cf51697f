"""Administration: actions that need the admin token."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.deps import ServicesDep, require_admin_token
from serving.schemas import ReloadResult

# Tagged "operations" like /health and /ready: the published OpenAPI tags stay as they were.
router = APIRouter(prefix="/admin", tags=["operations"], dependencies=[Depends(require_admin_token)])


@router.post("/reload", response_model=ReloadResult)
def reload(services: ServicesDep) -> ReloadResult:
    """Load the current champion and the latest online features now (requires the admin token)."""
    return services.reload()
