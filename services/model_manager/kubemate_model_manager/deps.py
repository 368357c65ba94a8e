"""The model manager's state, built in the lifespan, and the dependencies of its routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis

from kubemate.http.state import from_state
from kubemate.metadata.store import MetadataStore
from kubemate.model_assignments import ModelAssignments
from kubemate_model_manager.k8s.deployer import KubernetesDeployer
from kubemate_model_manager.manager import ModelManager
from kubemate_model_manager.pulls import PullTasks
from kubemate_model_manager.registry.store import ModelRegistry
from kubemate_model_manager.settings import ModelManagerSettings


@dataclass(frozen=True, slots=True)
class ModelManagerState:
    settings: ModelManagerSettings
    manager: ModelManager
    pulls: PullTasks
    redis: aioredis.Redis
    store: MetadataStore
    deployer: KubernetesDeployer


SettingsDep = Annotated[ModelManagerSettings, from_state(ModelManagerState, "settings")]
ManagerDep = Annotated[ModelManager, from_state(ModelManagerState, "manager")]
PullsDep = Annotated[PullTasks, from_state(ModelManagerState, "pulls")]
AssignmentsDep = Annotated[ModelAssignments, from_state(ModelManagerState, "manager.assignments")]
RegistryDep = Annotated[ModelRegistry, from_state(ModelManagerState, "manager.registry")]
StoreDep = Annotated[MetadataStore, from_state(ModelManagerState, "store")]
DeployerDep = Annotated[KubernetesDeployer, from_state(ModelManagerState, "deployer")]
