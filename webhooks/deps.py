"""Request dependencies as ``Annotated`` aliases, so routes declare what they need in one word."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.settings import Settings
from emails import Renderer
from emails.deployed import DeployedTemplates
from webhooks.journeys import JourneyGateway

__all__ = [
    "DeployedTemplatesDep",
    "EngineDep",
    "GatewayDep",
    "RendererDep",
    "SettingsDep",
    "WorkspaceDep",
]


def _settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def _engine(request: Request) -> Engine:
    return cast(Engine, request.app.state.engine)


def _workspace(request: Request) -> Workspace:
    return cast(Workspace, request.app.state.workspace)


def _gateway(request: Request) -> JourneyGateway:
    return cast(JourneyGateway, request.app.state.gateway)


def _renderer(request: Request) -> Renderer:
    return cast(Renderer, request.app.state.renderer)


def _deployed_templates(request: Request) -> DeployedTemplates:
    """One cache of deployed template files for the app, made on first use (it only needs the
    engine), so the pages of sent emails render what was deployed, as the worker did."""
    state = request.app.state
    found = getattr(state, "deployed_templates", None)
    if found is None:
        found = state.deployed_templates = DeployedTemplates(_engine(request))
    return cast(DeployedTemplates, found)


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
WorkspaceDep = Annotated[Workspace, Depends(_workspace)]
GatewayDep = Annotated[JourneyGateway, Depends(_gateway)]
RendererDep = Annotated[Renderer, Depends(_renderer)]
DeployedTemplatesDep = Annotated[DeployedTemplates, Depends(_deployed_templates)]
