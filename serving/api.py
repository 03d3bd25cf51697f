"""The API's routes, assembled in one router."""

from __future__ import annotations

from fastapi import APIRouter

from serving.routes import admin, ops, predict

api_router = APIRouter()
api_router.include_router(predict.router)
api_router.include_router(ops.router)
api_router.include_router(admin.router)
