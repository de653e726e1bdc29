{{/* Chart name, truncated to 63 characters (DNS label). */}}
{{- define "charter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "charter.fullname" -}}
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

{{- define "charter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource, without the component. */}}
{{- define "charter.baseLabels" -}}
helm.sh/chart: {{ include "charter.chart" . }}
{{ include "charter.instanceLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: charter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the issuer's resources. */}}
{{- define "charter.labels" -}}
{{ include "charter.baseLabels" . }}
app.kubernetes.io/component: issuer
{{- end }}

{{- define "charter.instanceLabels" -}}
app.kubernetes.io/name: {{ include "charter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of the issuer pods. */}}
{{- define "charter.selectorLabels" -}}
{{ include "charter.instanceLabels" . }}
app.kubernetes.io/component: issuer
{{- end }}

{{- define "charter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "charter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest or repository:tag (tag defaults to appVersion). */}}
{{- define "charter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* The Secret and key holding the database URL. */}}
{{- define "charter.databaseSecretName" -}}
{{- if .Values.database.url }}
{{- printf "%s-database" (include "charter.fullname" .) }}
{{- else }}
{{- required "database.existingSecret or database.url is required (the PostgreSQL URL)" .Values.database.existingSecret }}
{{- end }}
{{- end }}

{{- define "charter.databaseSecretKey" -}}
{{- if .Values.database.url }}url{{ else }}{{ required "database.existingSecretKey is required" .Values.database.existingSecretKey }}{{ end }}
{{- end }}

{{/* The Secret and key holding the admin password. */}}
{{- define "charter.adminSecretName" -}}
{{- if or .Values.admin.password (not .Values.admin.existingSecret) }}
{{- printf "%s-admin" (include "charter.fullname" .) }}
{{- else }}
{{- .Values.admin.existingSecret }}
{{- end }}
{{- end }}

{{- define "charter.adminSecretKey" -}}
{{- if or .Values.admin.password (not .Values.admin.existingSecret) }}password{{ else }}{{ required "admin.existingSecretKey is required" .Values.admin.existingSecretKey }}{{ end }}
{{- end }}

{{/* The public URL (token `iss`): config.publicUrl, else https://<first ingress host>/, else empty. */}}
{{- define "charter.publicUrl" -}}
{{- if .Values.config.publicUrl }}
{{- .Values.config.publicUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- if $host }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}{{ if has $host (.hosts | default list) }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s/" (ternary "https" "http" $tls) $host }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment shared by the issuer and the migration Job: the database URL and the log format. */}}
{{- define "charter.databaseEnv" -}}
- name: CHARTER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "charter.databaseSecretName" . }}
      key: {{ include "charter.databaseSecretKey" . }}
- name: CHARTER_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- end }}

{{/*
IPv4 ranges that are not public (the issuer's own push refusal, src/push.rs
`is_private`): "this network", private, CGNAT, loopback, link-local (and so
cloud metadata), IETF, documentation, benchmarking, multicast and reserved.
*/}}
{{- define "charter.nonPublicIPv4" -}}
- 0.0.0.0/8
- 10.0.0.0/8
- 100.64.0.0/10
- 127.0.0.0/8
- 169.254.0.0/16
- 172.16.0.0/12
- 192.0.0.0/24
- 192.0.2.0/24
- 192.168.0.0/16
- 198.18.0.0/15
- 198.51.100.0/24
- 203.0.113.0/24
- 224.0.0.0/4
- 240.0.0.0/4
{{- end }}

{{/*
IPv6 ranges that are not public. A NetworkPolicy cannot look at the IPv4
address inside an IPv6 one, so the ranges that carry one are refused whole:
::/8 (unspecified, loopback, IPv4-compatible, -mapped, SIIT, NAT64), 6to4
and Teredo (in 2001::/23); then discard, documentation, unique-local,
link-local, site-local and multicast.
*/}}
{{- define "charter.nonPublicIPv6" -}}
- "::/8"
- "100::/64"
- "2001::/23"
- "2001:db8::/32"
- "2002::/16"
- "fc00::/7"
- "fe80::/10"
- "fec0::/10"
- "ff00::/8"
{{- end }}

{{/*
A digest of a secret value for a pod annotation: it changes with the value
(so `helm upgrade` rolls the pods) without revealing it. Not a plain
sha256, which anyone who may read pods could test password guesses
against: the value goes through derivePassword (the Master Password
algorithm: scrypt, memory-hard) with this release's namespace, name and
what the value is as the scrypt salt, then sha256. Deterministic, so
`helm template` renders the same twice; each guess costs an scrypt, and
work done against one release is no use against another.
Usage: include "charter.secretDigest" (list $ "database" $value)
*/}}
{{- define "charter.secretDigest" -}}
{{- $ctx := index . 0 }}
{{- $salt := printf "charter/%s/%s/%s" $ctx.Release.Namespace $ctx.Release.Name (index . 1) }}
{{- derivePassword 1 "maximum" (index . 2) $salt "pod-annotation" | sha256sum }}
{{- end }}

{{/* The master key's Secret (required) and the file the issuer reads it from. */}}
{{- define "charter.masterKeySecret" -}}
{{- required "masterKey.existingSecret is required: the Secret with the master key that seals the signing keys and push credentials in the database. Create it with: kubectl create secret generic charter-master-key --from-literal=master.key=\"$(openssl rand -base64 32)\" (upgrading: see the chart's README, the keys Secret's credentials.key)" .Values.masterKey.existingSecret }}
{{- end }}

{{- define "charter.masterKeyFile" -}}
{{- printf "%s/master.key" (trimSuffix "/" .Values.masterKey.mountPath) }}
{{- end }}

{{/*
The Secret of keys to import (empty: none), after two checks: the keys
directory and the master key's directory are apart (neither inside the
other); and on `helm upgrade` from a chart that mounted the keys Secret and
had no master key (before 0.2.0), the Secret is named: without it the
issuer, finding no key in the database, would generate a new one, and the
tokens signed by the old keys could no longer be renewed. (`lookup` answers
nothing in `helm template`, so there the second check does nothing.)
*/}}
{{- define "charter.keysSecret" -}}
{{- $keys := trimSuffix "/" .Values.keys.mountPath }}
{{- $master := trimSuffix "/" .Values.masterKey.mountPath }}
{{- if or (eq $keys $master) (hasPrefix (printf "%s/" $master) $keys) (hasPrefix (printf "%s/" $keys) $master) }}
{{- fail (printf "keys.mountPath (%s) and masterKey.mountPath (%s) must be apart, neither inside the other" $keys $master) }}
{{- end }}
{{- $secret := .Values.keys.existingSecret }}
{{- if and (not $secret) .Release.IsUpgrade }}
{{- with (lookup "apps/v1" "Deployment" .Release.Namespace (include "charter.fullname" .)) }}
{{- $volumes := dict }}
{{- range .spec.template.spec.volumes }}
{{- $_ := set $volumes .name . }}
{{- end }}
{{- if and (hasKey $volumes "keys") (not (hasKey $volumes "master-key")) }}
{{- with (get $volumes "keys").secret }}
{{- fail (printf "this release's pods read their signing keys from Secret %s, and the issuer now keeps them in the database: set keys.existingSecret=%s for this upgrade so that they are imported (otherwise a new key is generated and tokens signed by the old ones can no longer be renewed); see Upgrading in the chart's README" .secretName .secretName) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $secret }}
{{- end }}

{{/*
The key schedule, checked as the issuer checks it at start (so that a bad
pair fails the render rather than every pod): a scheduled rotation must be
longer than the prepublication (a new key is published that long before it
signs). Empty values are the binary's defaults: no rotation, 48 hours.
*/}}
{{- define "charter.checkKeySettings" -}}
{{- $rotation := 0.0 }}
{{- $prepublish := 48.0 }}
{{- with .Values.config }}
{{- if and (not (kindIs "invalid" .keyRotationDays)) (ne (toString .keyRotationDays) "") }}
{{- $rotation = float64 .keyRotationDays }}
{{- end }}
{{- if and (not (kindIs "invalid" .keyPrepublishHours)) (ne (toString .keyPrepublishHours) "") }}
{{- $prepublish = float64 .keyPrepublishHours }}
{{- end }}
{{- end }}
{{- if and (gt $rotation 0.0) (le (mulf $rotation 24) $prepublish) }}
{{- fail (printf "config.keyRotationDays (%v) must be longer than config.keyPrepublishHours (%v hours; 48 when empty): a new key is published that long before it signs" $rotation $prepublish) }}
{{- end }}
{{- end }}
