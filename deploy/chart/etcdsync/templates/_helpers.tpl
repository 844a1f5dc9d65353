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

{{/*
The etcds and the publishing site for this release's role, as YAML:
primary and standby ({endpoints, tlsSecret, to}) and site. From
localEtcd/remoteEtcd and localSite/remoteSite when localEtcd is given (a
change of role swaps them), else from primaryEtcd/standbyEtcd and site.
*/}}
{{- define "etcdsync.sites" -}}
{{- $v := .Values -}}
{{- $np := $v.networkPolicy -}}
{{- if $v.localEtcd.endpoints -}}
{{- range $old := list "primaryEtcd" "standbyEtcd" -}}
{{- $e := get $v $old -}}
{{- if or $e.endpoints $e.tlsSecret -}}
{{- fail (printf "%s and localEtcd: name the etcds one way, either localEtcd and remoteEtcd (role picks the primary) or primaryEtcd and standbyEtcd" $old) -}}
{{- end -}}
{{- end -}}
{{- if or $np.primaryEtcdTo $np.standbyEtcdTo -}}
{{- fail "networkPolicy.primaryEtcdTo/standbyEtcdTo with localEtcd: name the etcds' peers in networkPolicy.localEtcdTo and remoteEtcdTo" -}}
{{- end -}}
{{- if eq $v.localSite $v.remoteSite -}}
{{- fail (printf "localSite and remoteSite are both %q: each site publishes under its own name (deploy/RUNBOOK.md \"Names\")" $v.localSite) -}}
{{- end -}}
{{- $local := dict "endpoints" $v.localEtcd.endpoints "tlsSecret" $v.localEtcd.tlsSecret "to" $np.localEtcdTo -}}
{{- $remote := dict "endpoints" $v.remoteEtcd.endpoints "tlsSecret" $v.remoteEtcd.tlsSecret "to" $np.remoteEtcdTo -}}
{{- $primary := ternary $local $remote (eq $v.role "primary") -}}
{{- $standby := ternary $remote $local (eq $v.role "primary") -}}
{{- $site := ternary $v.localSite $v.remoteSite (eq $v.role "primary") -}}
{{- if and $v.site (ne $v.site $site) -}}
{{- fail (printf "site %q contradicts localSite %q, remoteSite %q and role %s, which make %q the publishing site: leave site empty" $v.site $v.localSite $v.remoteSite $v.role $site) -}}
{{- end -}}
{{ dict "primary" $primary "standby" $standby "site" $site | toYaml }}
{{- else -}}
{{- if or $v.remoteEtcd.endpoints $v.remoteEtcd.tlsSecret $v.localEtcd.tlsSecret $v.localSite $v.remoteSite $np.localEtcdTo $np.remoteEtcdTo -}}
{{- fail "remoteEtcd, localSite, remoteSite, localEtcdTo or remoteEtcdTo without localEtcd.endpoints: name the etcds one way, either localEtcd and remoteEtcd (role picks the primary) or primaryEtcd and standbyEtcd" -}}
{{- end -}}
{{- $primary := dict "endpoints" $v.primaryEtcd.endpoints "tlsSecret" $v.primaryEtcd.tlsSecret "to" $np.primaryEtcdTo -}}
{{- $standby := dict "endpoints" $v.standbyEtcd.endpoints "tlsSecret" $v.standbyEtcd.tlsSecret "to" $np.standbyEtcdTo -}}
{{ dict "primary" $primary "standby" $standby "site" ($v.site | default "primary") | toYaml }}
{{- end -}}
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
The NetworkPolicy peers of servers given by URL; call with (dict "urls"
LIST "to" PEERS). PEERS when given; else, when every URL names an IP
address, those addresses (/32, /128); else nothing: a host name cannot be
resolved when rendering, and the rule is then open to any address on the
URLs' ports (name the peers in the values to close it).
*/}}
{{- define "etcdsync.peers" -}}
{{- if .to -}}
{{ toYaml .to }}
{{- else -}}
{{- $blocks := list -}}
{{- $all := true -}}
{{- range .urls -}}
{{- $host := (urlParse .).hostname -}}
{{- if regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" $host -}}
{{- $blocks = append $blocks (dict "ipBlock" (dict "cidr" (printf "%s/32" $host))) -}}
{{- else if contains ":" $host -}}
{{- $blocks = append $blocks (dict "ipBlock" (dict "cidr" (printf "%s/128" $host))) -}}
{{- else -}}
{{- $all = false -}}
{{- end -}}
{{- end -}}
{{- if and $all $blocks -}}
{{ $blocks | uniq | toYaml }}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The namespaces the applier and the auditor exclude besides the preset's:
the platform's list, both sites' NATS namespaces and the other site's
etcdsync namespace. The namespace etcdsync runs in is excluded by the
binary itself (POD_NAMESPACE).
*/}}
{{- define "etcdsync.excludedNamespaces" -}}
{{- $ns := .Values.excludedNamespaces -}}
{{- range list .Values.nats.namespace .Values.nats.remoteNamespace .Values.remoteNamespace -}}
{{- if and . (ne . $.Release.Namespace) -}}
{{- $ns = append $ns . -}}
{{- end -}}
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

{{/*
The log key ring is required in both roles: the publisher signs, the
applier verifies. An unauthenticated log must be asked for.
*/}}
{{- define "etcdsync.requireLogKey" -}}
{{- if not (or .Values.logKey.existingSecret .Values.logKey.allowUnauthenticated) -}}
{{- fail "logKey.existingSecret: name the existing Secret holding the log's key ring (deploy/RUNBOOK.md \"Log keys\"); without it anyone who can publish to the stream writes into the standby etcd. To run with an unauthenticated log anyway, set logKey.allowUnauthenticated: true" -}}
{{- end -}}
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
  value: {{ (include "etcdsync.sites" . | fromYaml).site | quote }}
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
  value: /etc/etcdsync/nats/password
{{- end }}
{{- end }}

{{/* Secret volumes; call with (dict "root" $ "component" NAME "etcds" (list (list "etcd" secretName) ...) "logKey" true "admin" true). */}}
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
{{- if .admin }}
{{- with .root.Values.nats.admin.existingSecret }}
- name: nats-admin
  secret:
    secretName: {{ . }}
    defaultMode: 288
    items:
      {{- if $.root.Values.nats.passwords.existingSecret }}
      - key: {{ $.root.Values.nats.admin.key | default "admin-password" }}
        path: password
      {{- else }}
      - key: {{ $.root.Values.nats.admin.key | default "nats.creds" }}
        path: nats.creds
      {{- end }}
{{- end }}
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
  mountPath: /etc/etcdsync/nats
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
{{- if and .admin .root.Values.nats.admin.existingSecret }}
- name: nats-admin
  mountPath: /etc/etcdsync/nats-admin
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
  # A pod that is not Ready (one crash-looping on an error that needs an
  # operator) may always be evicted: it must never block a node drain.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "etcdsync.selectorLabels" .component | nindent 6 }}
{{- end }}
{{- end }}

{{/* The seconds of a Go duration (5m, 1h30m, 500ms), as a float. */}}
{{- define "etcdsync.seconds" -}}
{{- $units := dict "ns" "1e-9" "us" "1e-6" "µs" "1e-6" "ms" "1e-3" "s" "1" "m" "60" "h" "3600" -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" . -1 -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $unit := trimPrefix $num . -}}
{{- $total = addf $total (mulf (float64 $num) (float64 (get $units $unit))) -}}
{{- end -}}
{{ $total }}
{{- end }}

{{/* The bytes of a size (1MiB, 1536KiB, 20GiB, 4Mi, 10MB, 1048576), as an integer. */}}
{{- define "etcdsync.bytes" -}}
{{- $units := dict "KiB" 1024 "MiB" 1048576 "GiB" 1073741824 "TiB" 1099511627776 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "KB" 1000 "MB" 1000000 "GB" 1000000000 "TB" 1000000000000 "B" 1 -}}
{{- $num := regexFind "^[0-9]+" . -}}
{{- $unit := trimPrefix $num . | trim -}}
{{ mul (int64 $num) (get $units $unit | default 1) }}
{{- end }}

{{/*
What the schema cannot check, two values against each other, refused as
the binary would refuse it at start-up. Checked in both roles, so that a
change of role never meets a refusal.
*/}}
{{- define "etcdsync.checkValues" -}}
{{- if .Values.nats.admin.existingSecret -}}
{{- if not (or .Values.nats.passwords.existingSecret .Values.nats.credentials.existingSecret) -}}
{{- fail "nats.admin: the admin identity logs in the way the components do; give nats.passwords or nats.credentials" -}}
{{- end -}}
{{- if not .Values.auditor.enabled -}}
{{- fail "nats.admin is mounted into the auditor's pod, where the runbook runs promote and streams init: set auditor.enabled (or drop nats.admin)" -}}
{{- end -}}
{{- end -}}
{{- if lt (include "etcdsync.seconds" .Values.checkInterval | float64) 10.0 -}}
{{- fail (printf "checkInterval %s: at least 10s; each audit reads both etcds in full, the primary across sites" .Values.checkInterval) -}}
{{- end -}}
{{- $p := .Values.publisher -}}
{{- $maxAge := include "etcdsync.seconds" $p.maxAge | float64 -}}
{{- $snap := include "etcdsync.seconds" $p.snapshotInterval | float64 -}}
{{- if and (gt $maxAge 0.0) (or (eq $snap 0.0) (ge $snap $maxAge)) -}}
{{- fail (printf "publisher.snapshotInterval %s must be set and below publisher.maxAge %s, or the stream's retention drops its last complete snapshot (a standby that falls behind could then not re-seed); the publisher would refuse it at start-up" $p.snapshotInterval $p.maxAge) -}}
{{- end -}}
{{- $a := .Values.applier -}}
{{- $txn := include "etcdsync.bytes" $a.maxTxnBytes | int64 -}}
{{- $req := include "etcdsync.bytes" $a.maxRequestBytes | int64 -}}
{{- if lt $txn 4096 -}}
{{- fail (printf "applier.maxTxnBytes %s: must be at least 4KiB" $a.maxTxnBytes) -}}
{{- end -}}
{{- if gt $txn $req -}}
{{- fail (printf "applier.maxTxnBytes %s is above applier.maxRequestBytes %s, the standby etcd's --max-request-bytes (etcd's default 1.5MiB): the standby would refuse such transactions. Lower applier.maxTxnBytes, or raise the standby etcd's --max-request-bytes and applier.maxRequestBytes with it" $a.maxTxnBytes $a.maxRequestBytes) -}}
{{- end -}}
{{- end }}
