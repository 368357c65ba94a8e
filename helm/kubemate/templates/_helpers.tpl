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
