{{/*
Environment shared by the control plane and the gateway: where the fleet is and how to
authenticate to it. The tritonfleet entry point reads these once at start (TRITONFLEET_ prefix).
*/}}
{{- define "tritonfleet.fleetEnv" -}}
- name: TRITONFLEET_FLEET
  value: kubernetes
- name: TRITONFLEET_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: TRITONFLEET_K8S_STATEFULSET
  value: {{ include "tritonfleet.triton.name" . | quote }}
- name: TRITONFLEET_K8S_LABEL_SELECTOR
  value: {{ include "tritonfleet.triton.selector" . | quote }}
- name: TRITONFLEET_K8S_HTTP_PORT
  value: {{ .Values.triton.ports.http | quote }}
- name: TRITONFLEET_K8S_GRPC_PORT
  value: {{ .Values.triton.ports.grpc | quote }}
- name: TRITONFLEET_K8S_METRICS_PORT
  value: {{ .Values.triton.ports.metrics | quote }}
- name: TRITONFLEET_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tritonfleet.adminKey.secretName" . }}
      key: {{ .Values.adminKey.secretKey }}
- name: TRITONFLEET_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tritonfleet.apiToken.secretName" . }}
      key: {{ .Values.apiToken.secretKey }}
{{- with .Values.prometheus.url }}
- name: TRITONFLEET_PROMETHEUS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.prometheus.bearerTokenSecret }}
- name: TRITONFLEET_PROMETHEUS_BEARER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: token
{{- end }}
{{- end -}}
