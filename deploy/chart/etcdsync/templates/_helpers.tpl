{{/*
Object names are fixed (etcdsync-publisher, etcdsync-applier,
etcdsync-auditor): the alerting rules select the Services by these names
(job labels) and the runbook execs into these Deployments. Install one
release per namespace.
*/}}

{{- define "etcdsync.selectorLabels" -}}
app.kubernetes.io/name: etcdsync
app.kubernetes.io/component: {{ . }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "publisher"). */}}
{{- define "etcdsync.labels" -}}
{{ include "etcdsync.selectorLabels" .component }}
app.kubernetes.io/part-of: etcdsync
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "etcdsync.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end }}
{{- end }}

{{- define "etcdsync.natsURL" -}}
{{- if .Values.nats.url -}}
{{- $host := (urlParse .Values.nats.url).hostname -}}
{{- $inCluster := regexMatch "\\.svc(\\.|$)" $host -}}
{{- if and .Values.nats.namespace (not (regexMatch (printf "(^|\\.)%s(\\.svc|$)" (regexQuoteMeta .Values.nats.namespace)) $host)) -}}
{{- fail (printf "nats.url %s is not in nats.namespace %q: the NetworkPolicy would only let etcdsync reach that namespace, and the standby would exclude it for nothing; set nats.namespace to NATS's namespace, or to \"\" for NATS outside the cluster" .Values.nats.url .Values.nats.namespace) -}}
{{- end -}}
{{- if and (not .Values.nats.namespace) $inCluster -}}
{{- fail (printf "nats.url %s is a Service of this cluster but nats.namespace is empty: name its namespace, so the standby never replicates the other site's NATS" .Values.nats.url) -}}
{{- end -}}
{{ .Values.nats.url }}
{{- else if .Values.nats.namespace -}}
nats://nats.{{ .Values.nats.namespace }}.svc.cluster.local:4222
{{- else -}}
{{ fail "nats.url: set it when nats.namespace is empty (NATS outside the cluster)" }}
{{- end }}
{{- end }}

{{/* The port of a URL, or def when it names none. */}}
{{- define "etcdsync.urlPort" -}}
{{- $host := (urlParse .url).host -}}
{{- if regexMatch ":[0-9]+$" $host -}}
{{ regexFind "[0-9]+$" $host }}
{{- else -}}
{{ .def }}
{{- end }}
{{- end }}

{{/* The distinct ports of a list of etcd endpoints, as a YAML list. */}}
{{- define "etcdsync.etcdPorts" -}}
{{- $ports := list -}}
{{- range . -}}
{{- $ports = append $ports (include "etcdsync.urlPort" (dict "url" . "def" "2379")) -}}
{{- end -}}
{{ $ports | uniq | toYaml }}
{{- end }}

{{/*
The namespaces the applier and the auditor exclude besides the preset's:
the platform's list and, on the standby, this site's NATS namespace. The
namespace etcdsync runs in is excluded by the binary itself (POD_NAMESPACE).
*/}}
{{- define "etcdsync.excludedNamespaces" -}}
{{- $ns := .Values.excludedNamespaces -}}
{{- if .Values.nats.namespace -}}
{{- $ns = append $ns .Values.nats.namespace -}}
{{- end -}}
{{ $ns | uniq | join "," }}
{{- end }}

{{/* The scope rules, identical for the applier and the auditor. */}}
{{- define "etcdsync.scopeEnv" -}}
- name: ETCDSYNC_KEYSPACE
  value: {{ .Values.scope.keyspace | quote }}
- name: ETCDSYNC_ETCD_PREFIX
  value: {{ .Values.scope.etcdPrefix | quote }}
{{- with include "etcdsync.excludedNamespaces" . }}
- name: ETCDSYNC_EXCLUDE_NAMESPACE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.scope.excludePrefixes }}
- name: ETCDSYNC_EXCLUDE_PREFIX
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.scope.includePrefixes }}
- name: ETCDSYNC_INCLUDE_PREFIX
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.scope.excludeResources }}
- name: ETCDSYNC_EXCLUDE_RESOURCE
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}

{{/* An etcd's endpoints and TLS files; call with (dict "prefix" "ETCD" "etcd" .Values.primaryEtcd "dir" "etcd"). */}}
{{- define "etcdsync.etcdEnv" -}}
- name: ETCDSYNC_{{ .prefix }}_ENDPOINTS
  value: {{ join "," .etcd.endpoints | quote }}
{{- if .etcd.tlsSecret }}
- name: ETCDSYNC_{{ .prefix }}_CACERT
  value: /etc/etcdsync/{{ .dir }}/ca.crt
- name: ETCDSYNC_{{ .prefix }}_CERT
  value: /etc/etcdsync/{{ .dir }}/tls.crt
- name: ETCDSYNC_{{ .prefix }}_KEY
  value: /etc/etcdsync/{{ .dir }}/tls.key
{{- end }}
{{- end }}

{{/* The log's MAC key ring, for the commands that take it (publish, apply; audit for keyed value hashes, status and promote run in the auditor's pod). */}}
{{- define "etcdsync.logKeyEnv" -}}
{{- with .Values.logKey.existingSecret }}
- name: ETCDSYNC_LOG_KEY_FILE
  value: /etc/etcdsync/log-key/{{ $.Values.logKey.key }}
{{- end }}
{{- end }}

{{/* What every etcdsync container reads: NATS, site, logs. */}}
{{- define "etcdsync.commonEnv" -}}
# The binary never replicates the namespace it runs in.
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: ETCDSYNC_NATS_URL
  value: {{ include "etcdsync.natsURL" . | quote }}
{{- with .Values.nats.credentials.existingSecret }}
- name: ETCDSYNC_NATS_CREDS
  value: /etc/etcdsync/nats-creds/{{ $.Values.nats.credentials.key }}
{{- end }}
{{- if .Values.nats.tls.existingSecret }}
- name: ETCDSYNC_NATS_CACERT
  value: /etc/etcdsync/nats-tls/ca.crt
{{- if .Values.nats.tls.clientCertificate }}
- name: ETCDSYNC_NATS_CERT
  value: /etc/etcdsync/nats-tls/tls.crt
- name: ETCDSYNC_NATS_KEY
  value: /etc/etcdsync/nats-tls/tls.key
{{- end }}
{{- end }}
- name: ETCDSYNC_SITE
  value: {{ .Values.site | quote }}
- name: ETCDSYNC_STREAM
  value: {{ .Values.stream | quote }}
- name: ETCDSYNC_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
# detailLogs: debug prints every applied revision.
- name: ETCDSYNC_LOG_LEVEL
  value: {{ ternary "debug" "info" .Values.detailLogs | quote }}
# Keep the Go heap under the container's memory limit.
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end }}

{{/* The component's NATS login by password; call with (dict "root" $ "component" NAME). */}}
{{- define "etcdsync.natsLoginEnv" -}}
{{- if and .root.Values.nats.passwords.existingSecret .root.Values.nats.credentials.existingSecret }}
{{- fail "nats.passwords and nats.credentials: give one way to log in to NATS" }}
{{- end }}
{{- if .root.Values.nats.passwords.existingSecret }}
- name: ETCDSYNC_NATS_USER
  value: etcdsync-{{ .component }}
- name: ETCDSYNC_NATS_PASSWORD_FILE
  value: /etc/etcdsync/nats-password/password
{{- end }}
{{- end }}

{{/* Secret volumes; call with (dict "root" $ "component" NAME "etcds" (list (list "etcd" secretName) ...) "logKey" true). */}}
{{- define "etcdsync.volumes" -}}
{{- with .root.Values.nats.passwords.existingSecret }}
- name: nats-password
  secret:
    secretName: {{ . }}
    defaultMode: 288
    items:
      - key: {{ $.component }}-password
        path: password
{{- end }}
{{- range .etcds }}
{{- if index . 1 }}
- name: {{ index . 0 }}-tls
  secret:
    secretName: {{ index . 1 }}
    defaultMode: 288 # 0440: readable by the pod's fsGroup only
{{- end }}
{{- end }}
{{- with .root.Values.nats.credentials.existingSecret }}
- name: nats-creds
  secret:
    secretName: {{ . }}
    defaultMode: 288
{{- end }}
{{- with .root.Values.nats.tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ . }}
    defaultMode: 288
{{- end }}
{{- if .logKey }}
{{- with .root.Values.logKey.existingSecret }}
- name: log-key
  secret:
    secretName: {{ . }}
    defaultMode: 288
{{- end }}
{{- end }}
{{- end }}

{{- define "etcdsync.volumeMounts" -}}
{{- if .root.Values.nats.passwords.existingSecret }}
- name: nats-password
  mountPath: /etc/etcdsync/nats-password
  readOnly: true
{{- end }}
{{- range .etcds }}
{{- if index . 1 }}
- name: {{ index . 0 }}-tls
  mountPath: /etc/etcdsync/{{ index . 0 }}
  readOnly: true
{{- end }}
{{- end }}
{{- if .root.Values.nats.credentials.existingSecret }}
- name: nats-creds
  mountPath: /etc/etcdsync/nats-creds
  readOnly: true
{{- end }}
{{- if .root.Values.nats.tls.existingSecret }}
- name: nats-tls
  mountPath: /etc/etcdsync/nats-tls
  readOnly: true
{{- end }}
{{- if and .logKey .root.Values.logKey.existingSecret }}
- name: log-key
  mountPath: /etc/etcdsync/log-key
  readOnly: true
{{- end }}
{{- end }}

{{/* The pod-level settings every etcdsync pod shares. */}}
{{- define "etcdsync.podSpec" -}}
serviceAccountName: etcdsync
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: 30
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "etcdsync.selectorLabels" .component | nindent 14 }}
{{- end }}

{{/* The container settings every etcdsync container shares: image, port, probes, security. */}}
{{- define "etcdsync.container" -}}
image: {{ include "etcdsync.image" .root | quote }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
ports:
  - name: metrics
    containerPort: {{ int .port }}
    protocol: TCP
# /healthz answers once etcd and NATS answered at start-up; the start-up
# probe gives slow connections time before liveness counts.
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 5
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
resources:
  {{- toYaml .resources | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end }}

{{/* The metrics Service of a component; call with (dict "root" $ "component" "publisher" "port" 9090). */}}
{{- define "etcdsync.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: etcdsync-{{ .component }}
  labels:
    {{- include "etcdsync.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "etcdsync.selectorLabels" .component | nindent 4 }}
  ports:
    - name: metrics
      port: {{ int .port }}
      targetPort: metrics
      protocol: TCP
{{- end }}

{{/* A PodDisruptionBudget keeping one pod of a component up. */}}
{{- define "etcdsync.pdb" -}}
{{- if and .root.Values.podDisruptionBudget.enabled (gt (int .replicas) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: etcdsync-{{ .component }}
  labels:
    {{- include "etcdsync.labels" . | nindent 4 }}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{- include "etcdsync.selectorLabels" .component | nindent 6 }}
{{- end }}
{{- end }}
