"""Annotated dependencies of the model manager routes, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubemate.metadata.store import MetadataStore
from kubemate.model_assignments import ModelAssignments
from kubemate_model_manager.k8s.deployer import KubernetesDeployer
from kubemate_model_manager.manager import ModelManager
from kubemate_model_manager.pulls import PullTasks
from kubemate_model_manager.registry.store import ModelRegistry
from kubemate_model_manager.settings import ModelManagerSettings


def _settings(request: Request) -> ModelManagerSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _manager(request: Request) -> ModelManager:
    return request.app.state.manager  # type: ignore[no-any-return]


def _pulls(request: Request) -> PullTasks:
    return request.app.state.pulls  # type: ignore[no-any-return]


def _assignments(request: Request) -> ModelAssignments:
    return request.app.state.manager.assignments  # type: ignore[no-any-return]


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.manager.registry  # type: ignore[no-any-return]


def _store(request: Request) -> MetadataStore:
    return request.app.state.store  # type: ignore[no-any-return]


def _deployer(request: Request) -> KubernetesDeployer:
    return request.app.state.deployer  # type: ignore[no-any-return]


SettingsDep = Annotated[ModelManagerSettings, Depends(_settings)]
ManagerDep = Annotated[ModelManager, Depends(_manager)]
PullsDep = Annotated[PullTasks, Depends(_pulls)]
AssignmentsDep = Annotated[ModelAssignments, Depends(_assignments)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
StoreDep = Annotated[MetadataStore, Depends(_store)]
DeployerDep = Annotated[KubernetesDeployer, Depends(_deployer)]
