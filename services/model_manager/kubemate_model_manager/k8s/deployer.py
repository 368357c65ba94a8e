"""Applies, inspects, scales and deletes runtime Deployments with the `kubernetes` client.

Apply is server-side apply: a PATCH with ``application/apply-patch+yaml`` (JSON is YAML), a
``fieldManager`` and ``force=true``, so the manager owns the fields it sets and re-applying is
idempotent. The typed API cannot send that content type (it picks a merge patch), so apply goes
through ``ApiClient.call_api``; reads, scale and delete use the typed ``AppsV1Api``/``CoreV1Api``.

Blocking (urllib3): call it from a worker thread. Client errors map to our tree: 404
:class:`DeploymentNotFound`, 409 :class:`Conflict`, 400/422 :class:`ValidationFailed`, an
unreachable or failing API server :class:`BackendUnavailable`, 401/403 a :class:`ServiceError`
naming the missing permission.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from kubemate.errors import (
    BackendUnavailable,
    Conflict,
    DeploymentNotFound,
    ServiceError,
    ValidationFailed,
)
from kubemate.logs import get_logger
from kubemate_model_manager.k8s.config import KubernetesConfig
from kubemate_model_manager.k8s.manifests import AUTOSCALED, Manifest, owner_labels

log = get_logger(__name__)

_PATHS = {
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    ("v1", "Service"): "/api/v1/namespaces/{namespace}/services/{name}",
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
    ): "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}",
}


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    name: str
    namespace: str
    phase: str  # Ready | Progressing | Failed | ScaledToZero
    replicas: int
    ready_replicas: int
    available_replicas: int
    updated_replicas: int
    model: str | None = None
    runtime: str | None = None
    autoscaled: bool = False  # an HPA owns the replica count
    message: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)


def _condition_dicts(conditions: list[Any] | None) -> list[dict[str, Any]]:
    out = []
    for c in conditions or []:
        out.append(
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "last_transition_time": (
                    c.last_transition_time.isoformat() if c.last_transition_time else None
                ),
            }
        )
    return out


def status_of(deployment: Any) -> DeploymentStatus:
    """The phase from the Deployment's conditions (what ``kubectl rollout status`` reads)."""
    meta, spec, st = deployment.metadata, deployment.spec, deployment.status
    replicas = spec.replicas if spec and spec.replicas is not None else 1
    ready = (st.ready_replicas if st else None) or 0
    available = (st.available_replicas if st else None) or 0
    updated = (st.updated_replicas if st else None) or 0
    conditions = _condition_dicts(st.conditions if st else None)
    by_type = {c["type"]: c for c in conditions}
    progressing = by_type.get("Progressing")
    failure = by_type.get("ReplicaFailure")
    phase, message = "Progressing", None
    if progressing and progressing["reason"] == "ProgressDeadlineExceeded":
        phase, message = "Failed", progressing["message"]
    elif failure and failure["status"] == "True":
        phase, message = "Failed", failure["message"]
    elif replicas == 0:
        phase = "ScaledToZero"
    elif (
        by_type.get("Available", {}).get("status") == "True"
        and ready >= replicas
        and updated >= replicas
    ):
        phase = "Ready"
    elif progressing:
        message = progressing["message"]
    annotations = (meta.annotations or {}) if meta else {}
    return DeploymentStatus(
        name=meta.name,
        namespace=meta.namespace,
        phase=phase,
        replicas=replicas,
        ready_replicas=ready,
        available_replicas=available,
        updated_replicas=updated,
        model=annotations.get("kubemate.dev/model"),
        runtime=annotations.get("kubemate.dev/runtime"),
        autoscaled=annotations.get(AUTOSCALED) == "true",
        message=message,
        conditions=conditions,
    )


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return str(exc.reason or exc.status)
    return str(body.get("message") or exc.reason) if isinstance(body, dict) else str(exc.reason)


class KubernetesDeployer:
    def __init__(self, config: KubernetesConfig, api_client: k8s.ApiClient | None = None) -> None:
        self._config = config
        self._api_client = api_client
        self.namespace = config.namespace
        self._owner = owner_labels(config)

    # ---- connection -------------------------------------------------------------------------

    def _client(self) -> k8s.ApiClient:
        if self._api_client is not None:
            return self._api_client
        mode = self._config.mode
        if mode == "off":
            raise BackendUnavailable("Kubernetes deployments are turned off (kubernetes.mode)")
        configuration = k8s.Configuration()
        try:
            if mode in ("auto", "in_cluster"):
                try:
                    k8s_config.load_incluster_config(client_configuration=configuration)
                except ConfigException:
                    if mode == "in_cluster":
                        raise
                    mode = "kubeconfig"
            if mode == "kubeconfig":
                k8s_config.load_kube_config(
                    config_file=str(self._config.kubeconfig) if self._config.kubeconfig else None,
                    context=self._config.context,
                    client_configuration=configuration,
                )
        except (ConfigException, OSError) as exc:
            raise BackendUnavailable(
                "no Kubernetes cluster configured: run in a cluster or set kubernetes.kubeconfig"
            ) from exc
        self._api_client = k8s.ApiClient(configuration)
        return self._api_client

    @contextmanager
    def _mapped(self, name: str) -> Iterator[None]:
        try:
            yield
        except ApiException as exc:
            message = _api_message(exc)
            if exc.status == 404:
                raise DeploymentNotFound(f"deployment {name!r} not found") from exc
            if exc.status == 409:
                raise Conflict(f"the cluster refused {name!r}: {message}") from exc
            if exc.status in (400, 422):
                raise ValidationFailed(f"the cluster refused {name!r}: {message}") from exc
            if exc.status in (401, 403):
                raise ServiceError(
                    "the cluster refused the model manager's credentials; its service account "
                    f"needs get/patch/delete on deployments, deployments/scale and services: "
                    f"{message}"
                ) from exc
            if exc.status is None or exc.status == 0 or exc.status >= 500 or exc.status == 429:
                raise BackendUnavailable(f"the Kubernetes API failed: {message}") from exc
            raise ServiceError(f"the Kubernetes API answered {exc.status}: {message}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise BackendUnavailable("the Kubernetes API server is unreachable") from exc

    def _apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self._client())

    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self._client())

    # ---- operations ---------------------------------------------------------------------------

    def apply(self, manifests: list[Manifest]) -> DeploymentStatus:
        """Server-side apply each manifest in order; returns the Deployment's status."""
        name = ""
        for manifest in manifests:
            key = (manifest["apiVersion"], manifest["kind"])
            if key not in _PATHS:
                raise ValidationFailed(f"cannot apply a {key[1]} ({key[0]})")
            meta = manifest["metadata"]
            name = meta["name"] if key[1] == "Deployment" else name
            with self._mapped(meta["name"]):
                self._client().call_api(
                    _PATHS[key],
                    "PATCH",
                    path_params={"namespace": meta["namespace"], "name": meta["name"]},
                    query_params=[("fieldManager", self._config.field_manager), ("force", "true")],
                    header_params={
                        "Content-Type": "application/apply-patch+yaml",
                        "Accept": "application/json",
                    },
                    body=manifest,
                    response_type="object",
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _request_timeout=self._config.request_timeout_s,
                )
            log.info("k8s.applied", kind=key[1], name=meta["name"], namespace=meta["namespace"])
        if not any(m["kind"] == "HorizontalPodAutoscaler" for m in manifests):
            self._delete_autoscaler(name)  # autoscaled before, fixed now
        return self.status(name)

    def status(self, name: str) -> DeploymentStatus:
        with self._mapped(name):
            deployment = self._apps().read_namespaced_deployment(
                name, self.namespace, _request_timeout=self._config.request_timeout_s
            )
        if not self._owner.items() <= (deployment.metadata.labels or {}).items():
            # Not ours (or another tenant's): report it like a missing one rather than let the
            # API touch it.
            raise DeploymentNotFound(f"deployment {name!r} not found")
        return status_of(deployment)

    def scale(self, name: str, replicas: int) -> DeploymentStatus:
        if not 0 <= replicas <= 100:
            raise ValidationFailed("replicas must be between 0 and 100")
        if self.status(name).autoscaled:  # only ours, and not the HPA's to size
            raise Conflict(
                f"deployment {name!r} is autoscaled: change its autoscaling, not its replicas"
            )
        with self._mapped(name):
            self._apps().patch_namespaced_deployment_scale(
                name,
                self.namespace,
                {"spec": {"replicas": replicas}},
                field_manager=self._config.field_manager,
                _request_timeout=self._config.request_timeout_s,
            )
        log.info("k8s.scaled", name=name, replicas=replicas)
        return self.status(name)

    def delete(self, name: str) -> None:
        self.status(name)  # only ours
        options = k8s.V1DeleteOptions(propagation_policy="Foreground")
        with self._mapped(name):
            self._apps().delete_namespaced_deployment(
                name, self.namespace, body=options, _request_timeout=self._config.request_timeout_s
            )
        try:
            with self._mapped(name):
                self._core().delete_namespaced_service(
                    name, self.namespace, _request_timeout=self._config.request_timeout_s
                )
        except DeploymentNotFound:
            pass  # the Service was already gone
        self._delete_autoscaler(name)
        log.info("k8s.deleted", name=name, namespace=self.namespace)

    def _delete_autoscaler(self, name: str) -> None:
        try:
            with self._mapped(name):
                k8s.AutoscalingV2Api(self._client()).delete_namespaced_horizontal_pod_autoscaler(
                    name, self.namespace, _request_timeout=self._config.request_timeout_s
                )
        except DeploymentNotFound:
            pass  # it had none

    def list(self) -> list[DeploymentStatus]:
        with self._mapped("*"):
            found = self._apps().list_namespaced_deployment(
                self.namespace,
                label_selector=",".join(f"{k}={v}" for k, v in self._owner.items()),
                _request_timeout=self._config.request_timeout_s,
            )
        return [status_of(d) for d in found.items]

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()
