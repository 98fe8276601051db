{{- define "dagwright.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dagwright.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dagwright.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "dagwright.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dagwright.selector" -}}
app.kubernetes.io/name: {{ include "dagwright.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dagwright.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* DAGWRIGHT_REDIS_URL, from the bundled Redis, a Secret, or a plain URL. */}}
{{- define "dagwright.redisEnv" -}}
- name: DAGWRIGHT_REDIS_URL
{{- if .Values.redis.bundled }}
  value: {{ printf "redis://%s-redis:6379/0" (include "dagwright.fullname" .) | quote }}
{{- else if .Values.redis.external.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.secretKey }}
{{- else }}
  value: {{ required "redis.external.url or redis.external.existingSecret is required when redis.bundled is false" .Values.redis.external.url | quote }}
{{- end }}
{{- end -}}

{{/* The worker image: job pods' runtime and the node agent. */}}
{{- define "dagwright.workerImage" -}}
{{ .Values.workerImage | default (printf "ghcr.io/dagwright/worker:%s" .Chart.AppVersion) }}
{{- end }}
