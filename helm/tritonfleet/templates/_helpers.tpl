{{/*
Names and labels shared by every template. Keep selectors (immutable on Deployments and
StatefulSets) to name + instance + component only, so upgrades never change them.
*/}}

{{- define "tritonfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tritonfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", truncated so the result is still a valid DNS label. */}}
{{- define "tritonfleet.componentName" -}}
{{- $full := include "tritonfleet.fullname" .root -}}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{- define "tritonfleet.triton.name" -}}
{{- include "tritonfleet.componentName" (dict "root" . "suffix" "triton") -}}
{{- end -}}
{{- define "tritonfleet.controlplane.name" -}}
{{- include "tritonfleet.componentName" (dict "root" . "suffix" "controlplane") -}}
{{- end -}}
{{- define "tritonfleet.gateway.name" -}}
{{- include "tritonfleet.componentName" (dict "root" . "suffix" "gateway") -}}
{{- end -}}

{{- define "tritonfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "root" $ "component" "triton"). */}}
{{- define "tritonfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tritonfleet.labels" -}}
helm.sh/chart: {{ include "tritonfleet.chart" .root }}
{{ include "tritonfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tritonfleet
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The label selector string the control plane and gateway use to find Triton pods. */}}
{{- define "tritonfleet.triton.selector" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=triton" (include "tritonfleet.name" .) .Release.Name -}}
{{- end -}}

{{/* Secret holding the control API admin token (existing one, or the one this chart generates). */}}
{{- define "tritonfleet.apiToken.secretName" -}}
{{- if .Values.apiToken.existingSecret -}}
{{- .Values.apiToken.existingSecret -}}
{{- else -}}
{{- include "tritonfleet.componentName" (dict "root" . "suffix" "api-token") -}}
{{- end -}}
{{- end -}}

{{/* Secret holding the Triton admin key (existing one, or the one this chart generates). */}}
{{- define "tritonfleet.adminKey.secretName" -}}
{{- if .Values.adminKey.existingSecret -}}
{{- .Values.adminKey.existingSecret -}}
{{- else -}}
{{- include "tritonfleet.componentName" (dict "root" . "suffix" "admin-key") -}}
{{- end -}}
{{- end -}}

{{/* Comma-separated restricted API list, identical for HTTP and gRPC. */}}
{{- define "tritonfleet.triton.restrictedApis" -}}
{{- join "," .Values.triton.restrictedApis -}}
{{- end -}}

{{/* "nvidia.com/mig-1g.10gb" -> "mig-1g.10gb"; "nvidia.com/gpu" -> "gpu"; no GPU -> "cpu". */}}
{{- define "tritonfleet.triton.accelerator" -}}
{{- if gt (int .Values.triton.gpu.count) 0 -}}
{{- trimPrefix "nvidia.com/" .Values.triton.gpu.resource -}}
{{- else -}}
cpu
{{- end -}}
{{- end -}}

{{- define "tritonfleet.image" -}}
{{- printf "%s:%s" .repository (default .defaultTag .tag) -}}
{{- end -}}

{{- define "tritonfleet.controlplane.storeClaim" -}}
{{- if .Values.controlplane.store.existingClaim -}}
{{- .Values.controlplane.store.existingClaim -}}
{{- else -}}
{{- include "tritonfleet.componentName" (dict "root" . "suffix" "store") -}}
{{- end -}}
{{- end -}}

{{- define "tritonfleet.triton.modelsClaim" -}}
{{- if .Values.triton.modelRepository.pvc.existingClaim -}}
{{- .Values.triton.modelRepository.pvc.existingClaim -}}
{{- else -}}
{{- include "tritonfleet.componentName" (dict "root" . "suffix" "models") -}}
{{- end -}}
{{- end -}}

{{/* The Prometheus the control plane and KEDA query; in-cluster operator default otherwise. */}}
{{- define "tritonfleet.prometheus.url" -}}
{{- .Values.prometheus.url -}}
{{- end -}}

{{/* Semantic checks the JSON schema cannot express; each message says what to change. */}}
{{- define "tritonfleet.validate" -}}
{{- $mr := .Values.triton.modelRepository -}}
{{- if and (eq $mr.type "objectStore") (not $mr.objectStore.uri) -}}
{{- fail "triton.modelRepository.objectStore.uri is required when triton.modelRepository.type is objectStore (e.g. s3://bucket/models)" -}}
{{- end -}}
{{- range $i, $arg := .Values.triton.extraArgs -}}
{{- if regexMatch "^--(model-control-mode|repository-poll-secs|strict-readiness|http-restricted-api|grpc-restricted-protocol|model-repository|http-port|grpc-port|metrics-port)([= ]|$)" $arg -}}
{{- fail (printf "triton.extraArgs[%d] is %q: the chart sets that flag itself (explicit model control, no polling, non-strict readiness, restricted APIs, ports); remove it and use the matching chart value" $i $arg) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not .Values.prometheus.url) -}}
{{- fail "autoscaling.enabled needs prometheus.url (the Prometheus that scrapes the Triton pods, e.g. http://prometheus-operated.monitoring.svc:9090)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- $sf := .Values.controlplane.scaleFleet -}}
{{- if $sf.enabled -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail (printf "controlplane.scaleFleet.enabled and autoscaling.enabled (%s) would both scale the Triton StatefulSet and fight over its replica count; enable only one" .Values.autoscaling.mode) -}}
{{- end -}}
{{- if gt (int $sf.minServers) (int $sf.maxServers) -}}
{{- fail (printf "controlplane.scaleFleet.minServers (%d) is greater than controlplane.scaleFleet.maxServers (%d)" (int $sf.minServers) (int $sf.maxServers)) -}}
{{- end -}}
{{- if or (lt (int .Values.triton.replicas) (int $sf.minServers)) (gt (int .Values.triton.replicas) (int $sf.maxServers)) -}}
{{- fail (printf "triton.replicas (%d) is outside controlplane.scaleFleet.minServers..maxServers (%d..%d); the initial size must lie within the bounds" (int .Values.triton.replicas) (int $sf.minServers) (int $sf.maxServers)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
