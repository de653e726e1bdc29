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
