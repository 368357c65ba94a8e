{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "kubemate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; component suffixes are appended to it. */}}
{{- define "kubemate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubemate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubemate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubemate.labels" -}}
helm.sh/chart: {{ include "kubemate.chart" . }}
{{ include "kubemate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubemate
{{- with include "kubemate.tenant" . }}
kubemate.dev/tenant: {{ . }}
{{- end }}
{{- end -}}

{{/*
The tenant that owns this release in namespace-per-tenant mode (tenancy.mode=namespace), empty in
the shared mode. Validated here once: a DNS label, because it names labels and the Milvus
database.
*/}}
{{- define "kubemate.tenant" -}}
{{- if eq .Values.tenancy.mode "namespace" -}}
{{- $tenant := required "kubemate: tenancy.mode=namespace needs tenancy.tenant" .Values.tenancy.tenant -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$" $tenant) -}}
{{- fail (printf "kubemate: tenancy.tenant %q must be a DNS label" $tenant) -}}
{{- end -}}
{{- $tenant -}}
{{- else if ne .Values.tenancy.mode "shared" -}}
{{- fail (printf "kubemate: tenancy.mode must be shared or namespace, not %q" .Values.tenancy.mode) -}}
{{- end -}}
{{- end -}}

{{/* The tenant's Milvus database: tenancy.milvusDatabase, or kubemate_<tenant> (Milvus names take no '-'). */}}
{{- define "kubemate.milvusDatabase" -}}
{{- with include "kubemate.tenant" . -}}
{{- default (printf "kubemate_%s" (. | replace "-" "_")) $.Values.tenancy.milvusDatabase -}}
{{- else -}}
{{- $.Values.milvus.dbName -}}
{{- end -}}
{{- end -}}

{{/*
Spreads a component's pods over zones, then nodes. ScheduleAnyway: a spread that cannot be met
(one node, one zone) must not keep a pod pending. Call with (dict "root" $ "component" "gateway").
*/}}
{{- define "kubemate.topologySpread" -}}
{{- $spread := .root.Values.topologySpread -}}
{{- if $spread.enabled }}
topologySpreadConstraints:
{{- range $key := $spread.topologyKeys }}
  - maxSkew: {{ $spread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "kubemate.componentSelectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Labels of one component. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "kubemate.componentLabels" -}}
{{ include "kubemate.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kubemate.componentSelectorLabels" -}}
{{ include "kubemate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The HTTP services: Kubernetes component name -> values key and Python package. They share one
Deployment/Service template; the worker has its own.
*/}}
{{- define "kubemate.httpComponents" -}}
gateway:
  values: gateway
  module: kubemate_gateway
ingest:
  values: ingest
  module: kubemate_ingest
retrieval:
  values: retrieval
  module: kubemate_retrieval
model-manager:
  values: modelManager
  module: kubemate_model_manager
{{- end -}}

{{/* In-cluster URL of an HTTP component. Call with (dict "root" $ "component" "ingest" "values" "ingest"). */}}
{{- define "kubemate.serviceUrl" -}}
{{- $port := (index .root.Values .values).port -}}
{{- printf "http://%s-%s:%v" (include "kubemate.fullname" .root) .component $port -}}
{{- end -}}

{{/* The image of one component. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "kubemate.image" -}}
{{- $image := .root.Values.image -}}
{{- $repository := printf "%s-%s" $image.repository .component -}}
{{- $digest := index ($image.digests | default dict) .component -}}
{{- if $digest -}}
{{- printf "%s@%s" $repository $digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kubemate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubemate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubemate.secretName" -}}
{{- default (include "kubemate.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* host:port of Redis for KEDA, from worker.keda.address or else redis.url. */}}
{{- define "kubemate.redisAddress" -}}
{{- if .Values.worker.keda.address -}}
{{- .Values.worker.keda.address -}}
{{- else -}}
{{- $address := regexFind "[^/@:]+:[0-9]+" .Values.redis.url -}}
{{- required "worker.keda.address: cannot read host:port from redis.url; set it" $address -}}
{{- end -}}
{{- end -}}

{{/* The database index in redis.url (redis://host:port/N), 0 when absent. */}}
{{- define "kubemate.redisDatabase" -}}
{{- $db := regexFind "/[0-9]+$" .Values.redis.url | trimPrefix "/" -}}
{{- default "0" $db -}}
{{- end -}}

{{/*
Refuses a production release that would start with empty or development secrets. The services
refuse them too, but only once running; failing here keeps a broken release from being applied.
*/}}
{{- define "kubemate.validate" -}}
{{- if not (has .Values.mode (list "development" "production")) -}}
{{- fail (printf "kubemate: mode must be development or production, not %q" .Values.mode) -}}
{{- end -}}
{{- if and (eq .Values.mode "production") (not .Values.existingSecret) -}}
{{- $s := .Values.secrets -}}
{{- $missing := list -}}
{{- if not $s.jwtSecret }}{{ $missing = append $missing "secrets.jwtSecret" }}{{ end -}}
{{- if not $s.internalSecret }}{{ $missing = append $missing "secrets.internalSecret" }}{{ end -}}
{{- if not $s.databaseUrl }}{{ $missing = append $missing "secrets.databaseUrl" }}{{ end -}}
{{- if eq .Values.objectStore.provider "s3" -}}
{{- if not $s.objectStoreAccessKey }}{{ $missing = append $missing "secrets.objectStoreAccessKey" }}{{ end -}}
{{- if not $s.objectStoreSecretKey }}{{ $missing = append $missing "secrets.objectStoreSecretKey" }}{{ end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "kubemate: mode=production needs non-empty secrets: %s. Set them (e.g. -f secrets.yaml kept out of git) or name a Secret you manage in existingSecret." (join ", " $missing)) -}}
{{- end -}}
{{- $weak := list -}}
{{- if eq $s.jwtSecret "kubemate-dev-jwt-secret-change-me" }}{{ $weak = append $weak "secrets.jwtSecret" }}{{ end -}}
{{- if eq $s.internalSecret "kubemate-dev-internal-secret-change-me" }}{{ $weak = append $weak "secrets.internalSecret" }}{{ end -}}
{{- if eq $s.objectStoreSecretKey "minioadmin" }}{{ $weak = append $weak "secrets.objectStoreSecretKey" }}{{ end -}}
{{- if $weak -}}
{{- fail (printf "kubemate: mode=production refuses the development default of %s" (join ", " $weak)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every Kubemate container: the ConfigMap, then the Secret (which wins). */}}
{{- define "kubemate.envFrom" -}}
- configMapRef:
    name: {{ include "kubemate.fullname" . }}
- secretRef:
    name: {{ include "kubemate.secretName" . }}
{{- end -}}

{{/* Pod annotations that roll the pods when the configuration or the chart's Secret changes. */}}
{{- define "kubemate.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end -}}

{{/* Scheduling settings shared by every pod. */}}
{{- define "kubemate.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
What scales the workers: "keda" (a ScaledObject on the ingest stream), "hpa" (CPU), or "" (a
fixed replicaCount). worker.keda.enabled: auto picks KEDA when the cluster serves its API, true
requires it (the render fails without), false always takes the HPA.
*/}}
{{- define "kubemate.workerScaler" -}}
{{- $v := .Values.worker -}}
{{- if $v.autoscaling.enabled -}}
{{- $keda := $v.keda.enabled -}}
{{- $served := .Capabilities.APIVersions.Has "keda.sh/v1alpha1" -}}
{{- if and (eq (toString $keda) "true") (not $served) -}}
{{- fail "kubemate: worker.keda.enabled needs KEDA (API keda.sh/v1alpha1 is not served by this cluster). Install KEDA first, set worker.keda.enabled=auto to fall back to an HPA, or with `helm template` pass --api-versions keda.sh/v1alpha1." -}}
{{- end -}}
{{- if not (has (toString $keda) (list "auto" "true" "false")) -}}
{{- fail (printf "kubemate: worker.keda.enabled must be auto, true or false, not %q" (toString $keda)) -}}
{{- end -}}
{{- if and $served (ne (toString $keda) "false") -}}keda{{- else -}}hpa{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Traefik's routers on Kubernetes: the same route classes, rules, priorities and middlewares as
deploy/traefik/dynamic/kubemate.yml (a test holds the two together). Every /v1 request and the
console go to the gateway, the one public entry.
*/}}
{{- define "kubemate.traefikRoutes" -}}
ingest-uploads:
  match: "Method(`POST`) && (Path(`/v1/documents`) || PathPrefix(`/v1/documents/`) || PathPrefix(`/v1/uploads`))"
  priority: 110
  middlewares: [security-headers, strip-identity, ratelimit-upload]
ingest:
  match: "PathPrefix(`/v1/documents`) || PathPrefix(`/v1/tasks`) || PathPrefix(`/v1/uploads`) || PathPrefix(`/v1/dead-letters`)"
  priority: 100
  middlewares: [security-headers, strip-identity, ratelimit-ip, json-body-limit]
retrieval-query:
  match: "Path(`/v1/query`)"
  priority: 100
  middlewares: [security-headers, strip-identity, ratelimit-ip, json-body-limit]
chat:
  match: "Path(`/v1/chat`) || PathPrefix(`/v1/chat/`)"
  priority: 100
  middlewares: [security-headers, strip-identity, ratelimit-ip, json-body-limit]
model-manager:
  match: "PathPrefix(`/v1/models`) || PathPrefix(`/v1/deployments`) || PathPrefix(`/v1/usage`) || PathPrefix(`/v1/settings`) || PathPrefix(`/v1/runtimes`)"
  priority: 100
  middlewares: [security-headers, strip-identity, ratelimit-ip]
gateway:
  match: "PathPrefix(`/v1/`)"
  priority: 10
  middlewares: [security-headers, strip-identity, ratelimit-ip, json-body-limit]
console:
  match: "PathPrefix(`/`)"
  priority: 1
  middlewares: [console-headers, strip-identity, ratelimit-ip, json-body-limit]
{{- end -}}

{{/*
Who talks to whom: each Kubemate component's outgoing connections. The NetworkPolicies are
rendered from this table (egress of each component, ingress of each backend), and
helm/kubemate/README.md lists the resulting matrix, which tests/integration/test_network_policies.py
asserts exactly.
*/}}
{{- define "kubemate.egressMap" -}}
gateway:
  services: [ingest, retrieval, model-manager]
  backends: [redis, postgresql]
ingest:
  backends: [redis, postgresql, minio, milvus]
retrieval:
  {{- /* A cross-encoder reranker reads its model from the registry in the object store. */}}
  backends: [redis, postgresql, milvus, ollama{{ if eq .Values.reranker.provider "cross_encoder" }}, minio{{ end }}]
  runtimes: true
model-manager:
  backends: [redis, postgresql, minio, ollama]
  runtimes: true
  kubernetesApi: true
worker:
  backends: [redis, postgresql, minio, milvus, ollama]
  runtimes: true
migrate:
  backends: [postgresql]
# The backup CronJobs (backup.enabled): their pods exist only then, and these rules with them.
backup-postgres:
  backends: [postgresql]
backup-objects:
  backends: [minio, backupTarget]
backup-vectors:
  backends: [postgresql, milvus, minio, backupTarget]
{{- end -}}

{{/* The pods of one backend, as a NetworkPolicy peer. Call with (dict "root" $ "backend" "redis"). */}}
{{- define "kubemate.backendPeer" -}}
{{- $b := index .root.Values.networkPolicy.backends .backend -}}
{{- if $b.namespaceSelector }}
- namespaceSelector:
    {{- toYaml $b.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml $b.podSelector | nindent 4 }}
{{- else }}
- podSelector:
    {{- toYaml $b.podSelector | nindent 4 }}
{{- end }}
{{- end -}}

{{/* The runtimes the model manager deploys (kubemate_model_manager.k8s.manifests.labels_of). */}}
{{- define "kubemate.runtimeSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: kubemate
  app.kubernetes.io/component: inference
{{- end -}}
