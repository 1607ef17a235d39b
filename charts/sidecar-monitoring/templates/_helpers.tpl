{{/* Names and labels of the sidecar-monitoring chart (prefixed so they never clash with the sidecar chart's). */}}

{{- define "sidecar-monitoring.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sidecar-monitoring.fullname" -}}
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

{{- define "sidecar-monitoring.standardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sidecar-monitoring.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of an object: `first` (labels the object needs, e.g. Grafana's dashboard label), the
     standard ones, `extra` (the object's labels from values), then commonLabels; on a clash the
     earlier wins, so no key appears twice. Takes ctx, first and extra. */}}
{{- define "sidecar-monitoring.labels" -}}
{{- $std := include "sidecar-monitoring.standardLabels" .ctx | fromYaml -}}
{{- $all := merge (deepCopy (default dict .first)) $std (deepCopy (default dict .extra)) (deepCopy (default dict .ctx.Values.commonLabels)) -}}
{{- toYaml $all -}}
{{- end -}}

{{/* <runbookBaseUrl>/runbooks/<alert in lower case>/: the alert's page on the documentation site. */}}
{{- define "sidecar-monitoring.runbookUrl" -}}
{{- printf "%s/runbooks/%s/" (trimSuffix "/" .ctx.Values.runbookBaseUrl) (lower .alert) -}}
{{- end -}}

{{/* One alerting rule (a list item). Takes: ctx (the chart's context), alert (its name), cfg (its values),
     expr, summary, description, and optionally labels (the rule's own). Severity, ruleLabels and the
     runbook URL come from values; on a clash the rule's own labels win, then severity. */}}
{{- define "sidecar-monitoring.rule" -}}
- alert: {{ .alert }}
  expr: |-
    {{- .expr | trim | nindent 4 }}
  for: {{ .cfg.for }}
  labels:
    {{- $labels := merge (deepCopy (default dict .labels)) (dict "severity" .cfg.severity) (deepCopy (default dict .ctx.Values.prometheusRule.ruleLabels)) }}
    {{- toYaml $labels | nindent 4 }}
  annotations:
    summary: {{ .summary | quote }}
    description: {{ .description | quote }}
    runbook_url: {{ include "sidecar-monitoring.runbookUrl" . | quote }}
{{- end -}}
