{{/* Names and labels. */}}
{{- define "rerankd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rerankd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rerankd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "rerankd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The rerankd pods; the bundled Redis has component "redis", so the Service never selects it. */}}
{{- define "rerankd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rerankd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "rerankd.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rerankd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "rerankd.image" -}}
{{- $tag := ternary .Values.image.cudaTag .Values.image.tag .Values.gpu.enabled }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The Secret holding RERANKD_API_KEY, or "" when the server runs without keys. */}}
{{- define "rerankd.apiKeySecret" -}}
{{- if .Values.apiKeys.existingSecret }}
{{- .Values.apiKeys.existingSecret }}
{{- else if or .Values.apiKeys.keys .Values.apiKeys.generate }}
{{- printf "%s-api-keys" (include "rerankd.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The container's environment, as the ConfigMap's data: RERANKD_* settings (the chart's own, then
.Values.settings) and, for a model that is not baked into the image, the Hugging Face variables.
*/}}
{{- define "rerankd.configData" -}}
{{- $v := .Values }}
{{- $env := dict
  "RERANKD_HOST" "0.0.0.0"
  "RERANKD_PORT" (toString $v.containerPort)
  "RERANKD_MODEL" $v.model.id
  "RERANKD_DTYPE" $v.model.dtype
  "RERANKD_BACKEND" $v.model.backend
  "RERANKD_DRAIN_TIMEOUT" (toString $v.drainTimeoutSeconds) }}
{{- with $v.model.revision }}{{ $_ := set $env "RERANKD_REVISION" . }}{{ end }}
{{- with $v.model.maxLength }}{{ $_ := set $env "RERANKD_MAX_LENGTH" (toString .) }}{{ end }}
{{- if $v.redis.url }}{{ $_ := set $env "RERANKD_CACHE_URL" $v.redis.url }}{{ end }}
{{- if $v.redis.deploy }}
{{- $_ := set $env "RERANKD_CACHE_URL" (printf "redis://%s-redis:6379/0" (include "rerankd.fullname" .)) }}
{{- end }}
{{- range $name, $value := $v.settings }}
{{- $_ := set $env $name (ternary (join "," $value) (toString $value) (kindIs "slice" $value)) }}
{{- end }}
{{- if eq $v.model.source "hub" }}
{{- $_ := set $env "HF_HUB_OFFLINE" "0" }}
{{- else if and (eq $v.model.source "volume") (not (hasPrefix "/" $v.model.id)) }}
{{- $_ := set $env "HF_HOME" $v.model.volume.mountPath }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* Refuse value combinations the schema cannot express, saying what to change. */}}
{{- define "rerankd.validate" -}}
{{- $v := .Values }}
{{- $owned := dict "RERANKD_HOST" "nothing (pods listen on 0.0.0.0)" "RERANKD_PORT" "containerPort"
  "RERANKD_MODEL" "model.id" "RERANKD_REVISION" "model.revision" "RERANKD_DTYPE" "model.dtype"
  "RERANKD_BACKEND" "model.backend" "RERANKD_MAX_LENGTH" "model.maxLength"
  "RERANKD_DRAIN_TIMEOUT" "drainTimeoutSeconds" "RERANKD_API_KEY" "apiKeys" "RERANKD_CACHE_URL" "redis" }}
{{- range $name, $_ := $v.settings }}
{{- with get $owned $name }}
{{- fail (printf "settings.%s is set by the chart: use %s instead" $name .) }}
{{- end }}
{{- end }}
{{- $needed := add $v.preStopSleepSeconds $v.drainTimeoutSeconds 5 }}
{{- if le (int $v.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be above preStopSleepSeconds + drainTimeoutSeconds + 5 s for the last 503s (%d): raise it" (int $v.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- if gt (len (compact (list $v.redis.url (and $v.redis.urlSecret $v.redis.urlSecret.name) (ternary "deploy" "" $v.redis.deploy)))) 1 }}
{{- fail "choose one Redis: redis.url, redis.urlSecret or redis.deploy" }}
{{- end }}
{{- if and $v.redis.urlSecret $v.redis.urlSecret.name (not $v.redis.urlSecret.key) }}
{{- fail "redis.urlSecret needs key: the Secret's key that holds the Redis URL" }}
{{- end }}
{{- if and (eq $v.model.source "volume") (not $v.model.volume.claimName) }}
{{- fail "model.source is volume: set model.volume.claimName to the PersistentVolumeClaim that holds the model" }}
{{- end }}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- end }}
