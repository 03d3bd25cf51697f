"""Operations: liveness, readiness and the served model."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import JSONResponse

from core.names import CHAMPION
from serving.deps import ServicesDep
from serving.schemas import Health, LogStatus, ModelInfo, Readiness, RefusedModel, StreamInfo
from serving.services import Services

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, name="health")
def check_health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, name="ready")
def check_readiness(services: ServicesDep) -> JSONResponse:
    """Readiness: a model and the online features are loaded, and answers can be logged.

    A log that spools while its database is away is ``degraded`` and still
    ready (every answer is kept); a log that can keep nothing is ``failing``,
    and then /predict answers 503, and so does this. An API that follows the event
    stream and cannot read it (Redis away) is ``degraded`` and still ready: answers go
    on from the features as they are, each marked with its watermark.
    """
    snapshot = services.snapshot
    health = services.log.health() if services.log is not None else None
    logs_ok = health is not None and health.status != "failing"
    stream = services.stream_status()
    # Not connected yet, with no failed read, is a worker still starting its first read.
    stream_ok = not stream.following or (not stream.gap and (stream.connected or stream.errors == 0))
    body = Readiness(
        status="loading"
        if snapshot is None
        else "not-logging"
        if not logs_ok
        else "ready"
        if stream_ok
        else "degraded",
        model_version=snapshot.model.version if snapshot is not None else None,
        features_version=snapshot.features.version if snapshot is not None else None,
        refused=_refused(services),
        log=LogStatus(**asdict(health)) if health is not None else None,
        features_missing=services.features_missing,
        stream=StreamInfo(**asdict(stream)),
    )
    code = status.HTTP_200_OK if snapshot is not None and logs_ok else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


@router.get(
    "/model",
    response_model=ModelInfo,
    name="model_info",
    responses={503: {"description": "No model may serve yet (see `refused` on /ready)."}},
)
def read_model(services: ServicesDep) -> ModelInfo:
    """The served model: name, version, alias, metrics, lineage, and the last refused champion."""
    snapshot = services.snapshot
    if snapshot is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no model is being served yet; see /ready")
    served = snapshot.model
    return ModelInfo(
        name=served.name,
        version=served.version,
        alias=CHAMPION,
        run_id=served.run_id,
        features=served.features,
        metrics=served.metrics,
        lineage=served.lineage,
        refused=_refused(services),
    )


def _refused(services: Services) -> RefusedModel | None:
    refusal = services.refusal
    if refusal is None:
        return None
    return RefusedModel(version=refusal.version, reason=refusal.reason, refused_at=refusal.at)
