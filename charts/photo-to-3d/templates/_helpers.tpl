{{/* Names, labels and the facts several templates share; each is defined once, here. */}}

{{- define "p3d.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "p3d.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "triton") */}}
{{- define "p3d.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* No library reports to a third party (img2mesh/telemetry.py): in every container of ours. */}}
{{- define "p3d.noTelemetryEnv" -}}
- name: ORT_DISABLE_TELEMETRY
  value: "1"
- name: HF_HUB_DISABLE_TELEMETRY
  value: "1"
{{- end -}}

{{- define "p3d.image" -}}
{{- printf "%sphoto-to-3d/%s:%s" .root.Values.images.registry .name .root.Values.images.tag -}}
{{- end -}}

{{/* The model repository one Triton pod serves: one TripoSR version, one flavour. */}}
{{- define "p3d.repository" -}}
{{- printf "/models/%s/v%d" .Values.model.flavour (int .Values.model.version) -}}
{{- end -}}

{{- define "p3d.gpu" -}}
{{- if eq .Values.model.flavour "gpu" }}true{{ end -}}
{{- end -}}

{{- define "p3d.modelRepositoryClaim" -}}
{{- .Values.modelRepository.existingClaim | default (printf "%s-model-repository" (include "p3d.name" .)) -}}
{{- end -}}

{{/* Headless: one DNS record per ready Triton pod, for the workers' round-robin gRPC channel. */}}
{{- define "p3d.tritonService" -}}
{{- printf "%s-triton.%s.svc.%s" (include "p3d.name" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{- define "p3d.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis.%s.svc.%s" (include "p3d.name" .) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- required "redis.external.host is required with redis.enabled=false" .Values.redis.external.host -}}
{{- end -}}
{{- end -}}

{{- define "p3d.redisPort" -}}
{{- if .Values.redis.enabled }}6379{{ else }}{{ .Values.redis.external.port }}{{ end -}}
{{- end -}}

{{- define "p3d.redisDatabase" -}}
{{- if .Values.redis.enabled }}0{{ else }}{{ .Values.redis.external.database }}{{ end -}}
{{- end -}}

{{- define "p3d.redisTls" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.tls }}true{{ end -}}
{{- end -}}

{{- define "p3d.redisPasswordKey" -}}
{{- if not .Values.redis.enabled }}{{ .Values.redis.external.passwordKey }}{{ end -}}
{{- end -}}

{{/* REDIS_URL; a password comes from the REDIS_PASSWORD variable defined before it. */}}
{{- define "p3d.redisUrl" -}}
{{- $user := ternary "" .Values.redis.external.username .Values.redis.enabled -}}
{{- $auth := "" -}}
{{- if include "p3d.redisPasswordKey" . -}}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $user -}}
{{- else if $user -}}
{{- $auth = printf "%s@" $user -}}
{{- end -}}
{{- printf "%s://%s%s:%s/%s" (ternary "rediss" "redis" (eq (include "p3d.redisTls" .) "true")) $auth (include "p3d.redisHost" .) (include "p3d.redisPort" .) (include "p3d.redisDatabase" .) -}}
{{- end -}}

{{/* The Redis lists producers push onto, one per kombu priority step; step 0 is the plain queue (docs/facts.md). */}}
{{- define "p3d.queueLists" -}}
{{- $lists := list -}}
{{- range .Values.queue.prioritySteps -}}
{{- $lists = append $lists (ternary $.Values.queue.name (printf "%s\x06\x16%d" $.Values.queue.name (int .)) (eq (int .) 0)) -}}
{{- end -}}
{{- toJson $lists -}}
{{- end -}}

{{- define "p3d.securityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}
