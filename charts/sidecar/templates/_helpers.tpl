{{/*
Named templates. Every one of them takes the sidecar chart's own context: `.` inside this chart,
`.Subcharts.sidecar` from a parent chart that lists this chart as a dependency (see docs/deploying.md).
*/}}

{{- define "sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sidecar.fullname" -}}
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

{{- define "sidecar.standardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of an object: the standard ones, then `extra` (an object's own labels from values), then
     commonLabels; on a clash the earlier wins, so no key appears twice. Takes ctx and extra. */}}
{{- define "sidecar.labelsWith" -}}
{{- $std := include "sidecar.standardLabels" .ctx | fromYaml -}}
{{- toYaml (merge $std (deepCopy (default dict .extra)) (deepCopy (default dict .ctx.Values.commonLabels))) -}}
{{- end -}}

{{- define "sidecar.labels" -}}
{{- include "sidecar.labelsWith" (dict "ctx" . "extra" dict) -}}
{{- end -}}

{{- define "sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sidecar.configMapName" -}}
{{- printf "%s-config" (include "sidecar.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The PodMonitor's name ends up in the job label ("<namespace>/<name>"); SidecarDown matches "sidecar". */}}
{{- define "sidecar.podMonitorName" -}}
{{- $full := include "sidecar.fullname" . -}}
{{- if contains "sidecar" $full -}}{{ $full }}{{- else -}}{{ printf "%s-sidecar" $full | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is given (the tag is then ignored), else repository:tag. */}}
{{- define "sidecar.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the sidecar runs as a native sidecar (init container, restartPolicy Always), else "". */}}
{{- define "sidecar.native" -}}
{{- $mode := .Values.sidecar.mode -}}
{{- if eq $mode "native" -}}true
{{- else if and (eq $mode "auto") (semverCompare ">=1.29-0" .Capabilities.KubeVersion.Version) -}}true
{{- end -}}
{{- end -}}

{{/* Deep merge `src` into the map `dst` in place: maps merge key by key, anything else replaces,
     false/0/"" included (sprig's mergeOverwrite would silently skip those). */}}
{{- define "sidecar.mergeInto" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) -}}
{{- include "sidecar.mergeInto" (dict "dst" (get $dst $k) "src" $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The effective configuration file: values `config` deep-merged over files/sidecar.yaml. */}}
{{- define "sidecar.configYaml" -}}
{{- $cfg := dict -}}
{{- if not .Values.configReplacesDefault -}}
{{- $cfg = .Files.Get "files/sidecar.yaml" | fromYaml -}}
{{- if hasKey $cfg "Error" -}}{{- fail (printf "files/sidecar.yaml: %s" (get $cfg "Error")) -}}{{- end -}}
{{- end -}}
{{- include "sidecar.mergeInto" (dict "dst" $cfg "src" (deepCopy (default dict .Values.config))) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Pod labels that mark a pod carrying the sidecar (the PodMonitor selects on them). */}}
{{- define "sidecar.podLabels" -}}
egress-sidecar.io/injected: "true"
egress-sidecar.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{/* Pod annotations: the config checksum (a change rolls the pods) and, without a PodMonitor, scrape hints. */}}
{{- define "sidecar.podAnnotations" -}}
checksum/sidecar-config: {{ include "sidecar.configYaml" . | sha256sum }}
{{- if not .Values.metrics.podMonitor.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.sidecar.opsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* Pod volumes the sidecar needs (list items): its configuration, /tmp, the state directory of the
     embedded job ledger, and sidecar.extraVolumes. */}}
{{- define "sidecar.volumes" -}}
- name: sidecar-config
  configMap:
    name: {{ include "sidecar.configMapName" . }}
- name: sidecar-tmp
  emptyDir:
    sizeLimit: {{ .Values.sidecar.tmpSizeLimit }}
- name: sidecar-state
  {{- with .Values.ledger.state.sizeLimit }}
  emptyDir:
    sizeLimit: {{ . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- with .Values.sidecar.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Classic variant's postStart hook: kubelet starts a pod's containers in order and waits for each
     one's postStart hook, so with the sidecar first the bot starts only once this returns. It polls
     /health/ready on the ops port and exits 0 on the first 200, or 1 after holdBotUntilReady.timeoutSeconds
     (kubelet then kills the sidecar and restarts it, and records a FailedPostStartHook event). The image
     is python:3.11-slim (no curl), so the interpreter does the HTTP. */}}
{{- define "sidecar.holdScript" -}}
import http.client, sys, time, urllib.request
url = "http://127.0.0.1:{{ .Values.sidecar.opsPort }}/health/ready"
deadline = time.monotonic() + {{ .Values.sidecar.holdBotUntilReady.timeoutSeconds }}
while True:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                sys.exit(0)
    except (OSError, http.client.HTTPException):
        pass  # not listening yet, a 503 (HTTPError), a broken answer
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.2)
{{- end -}}

{{/* The container body shared by both variants; `native` picks the variant. */}}
{{- define "sidecar.containerSpec" -}}
{{- $v := .ctx.Values -}}
{{- $s := $v.sidecar -}}
name: sidecar
image: {{ include "sidecar.image" .ctx | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- if .native }}
restartPolicy: Always
{{- end }}
args:
  - --config
  - /etc/sidecar/sidecar.yaml
  - --host
  - 127.0.0.1
  - --port
  - {{ $s.proxyPort | quote }}
  - --ops-host
  - 0.0.0.0
  - --ops-port
  - {{ $s.opsPort | quote }}
  - --log-format
  - {{ $s.logFormat }}
{{- range $s.extraArgs }}
  - {{ . | quote }}
{{- end }}
ports:
  - name: sidecar-ops
    containerPort: {{ $s.opsPort }}
    protocol: TCP
{{- $keys := $v.secrets.keys | default dict }}
env:
{{- if $v.secrets.existingSecret }}
{{- range $envName, $key := $keys }}
{{- if $key }}
  - name: {{ $envName }}
    valueFrom:
      secretKeyRef:
        name: {{ $v.secrets.existingSecret }}
        key: {{ $key }}
        optional: true
{{- end }}
{{- end }}
{{- end }}
  - name: SIDECAR_STATE_DIR
    value: {{ $v.ledger.state.mountPath | quote }}
{{- with $v.ledger.redis.existingSecret }}
  - name: SIDECAR_REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $v.ledger.redis.key }}
{{- end }}
{{- with $s.env }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $v.secrets.existingSecret $v.secrets.envFrom }}
envFrom:
  - secretRef:
      name: {{ $v.secrets.existingSecret }}
      optional: true
{{- end }}
startupProbe:
  httpGet: {path: /health/live, port: sidecar-ops}
  {{- toYaml $s.probes.startup | nindent 2 }}
livenessProbe:
  httpGet: {path: /health/live, port: sidecar-ops}
  {{- toYaml $s.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /health/ready, port: sidecar-ops}
  {{- toYaml $s.probes.readiness | nindent 2 }}
{{- if not .native }}
lifecycle:
  {{- if $s.holdBotUntilReady.enabled }}
  postStart:
    exec:
      command:
        - python
        - -c
        - {{ include "sidecar.holdScript" .ctx | quote }}
  {{- end }}
  preStop:
    exec:
      command: ["sleep", {{ $s.preStopSleepSeconds | quote }}]
{{- end }}
resources:
  {{- toYaml $s.resources | nindent 2 }}
securityContext:
  {{- toYaml $s.securityContext | nindent 2 }}
volumeMounts:
  - name: sidecar-config
    mountPath: /etc/sidecar
    readOnly: true
  - name: sidecar-tmp
    mountPath: /tmp
  - name: sidecar-state
    mountPath: {{ $v.ledger.state.mountPath }}
{{- with $s.extraVolumeMounts }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The sidecar as an ordinary container (list item for `containers:`). */}}
{{- define "sidecar.container" -}}
- {{ include "sidecar.containerSpec" (dict "ctx" . "native" false) | indent 2 | trimPrefix "  " }}
{{- end -}}

{{/* The sidecar as a native sidecar (list item for `initContainers:`). */}}
{{- define "sidecar.initContainer" -}}
- {{ include "sidecar.containerSpec" (dict "ctx" . "native" true) | indent 2 | trimPrefix "  " }}
{{- end -}}

{{/* Version-aware: the native item for `initContainers:` on >= 1.29 (or mode native), else nothing. */}}
{{- define "sidecar.initContainers" -}}
{{- if include "sidecar.native" . }}{{ include "sidecar.initContainer" . }}{{ end -}}
{{- end -}}

{{/* Version-aware: the classic item for `containers:` before 1.29 (or mode classic), else nothing. */}}
{{- define "sidecar.containers" -}}
{{- if not (include "sidecar.native" .) }}{{ include "sidecar.container" . }}{{ end -}}
{{- end -}}
