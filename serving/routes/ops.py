"""Operations: liveness, readiness and the served model."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from core.names import CHAMPION
from serving.deps import ServicesDep
from serving.schemas import Health, ModelInfo, Readiness

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, name="health")
def check_health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, name="ready")
def check_readiness(services: ServicesDep) -> JSONResponse:
    """Readiness: a model and the online features are loaded."""
    model_version = services.models.current.version if services.models.loaded else None
    features_version = services.features.version if services.features else None
    is_ready = model_version is not None and features_version is not None
    body = Readiness(
        status="ready" if is_ready else "loading", model_version=model_version, features_version=features_version
    )
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/model", response_model=ModelInfo, name="model_info")
def read_model(services: ServicesDep) -> ModelInfo:
    """The served model: name, version, alias, metrics and lineage."""
    served = services.models.current
    return ModelInfo(
        name=served.name,
        version=served.version,
        alias=CHAMPION,
        run_id=served.run_id,
        features=served.features,
        metrics=served.metrics,
        lineage=served.lineage,
    )
