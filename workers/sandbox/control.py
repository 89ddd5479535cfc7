"""Control endpoints every emulator mounts under ``/_sandbox``: script outcomes, read the oracle."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from workers.sandbox.core import SandboxState


class ScriptRequest(BaseModel):
    destination: str
    outcomes: list[str]


def control_router(state: SandboxState) -> APIRouter:
    router = APIRouter(prefix="/_sandbox")

    @router.post("/script")
    def script(request: ScriptRequest) -> dict[str, Any]:
        try:
            state.script(request.destination, request.outcomes)
        except ValueError as err:
            raise HTTPException(status_code=422, detail=str(err)) from err
        return {"ok": True}

    @router.get("/oracle")
    def oracle() -> dict[str, Any]:
        return {"provider": state.provider, "accepted": [asdict(e) for e in state.oracle()]}

    return router
