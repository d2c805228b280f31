{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "babysitter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "babysitter.fullname" -}}
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

{{- define "babysitter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "babysitter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "babysitter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "babysitter.labels" -}}
helm.sh/chart: {{ include "babysitter.chart" . }}
{{ include "babysitter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "babysitter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "babysitter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "babysitter.leaseName" -}}
{{- default (printf "%s-leader" (include "babysitter.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "babysitter.publicUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "babysitter.fullname" .) .Release.Namespace .Values.service.port) .Values.publicUrl }}
{{- end }}

{{- define "babysitter.usesPostgres" -}}
{{- if .Values.audit.postgres.existingSecret }}true{{ end }}
{{- end }}

{{/* Refuse configurations that would lose the audit log or let two replicas act. */}}
{{- define "babysitter.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not (include "babysitter.usesPostgres" .)) }}
{{- fail "replicaCount > 1 needs audit.postgres.existingSecret: replicas cannot share a SQLite audit log" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: only one replica may act" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "namespaced") (empty .Values.rbac.watchNamespaces) }}
{{- fail "rbac.scope=namespaced needs rbac.watchNamespaces" }}
{{- end }}
{{- end }}

{{/* The verbs babysitter uses on workloads and their pods, per API group: exactly
deploy/rbac/actuator-rules.yaml + discovery-rules.yaml (scripts/helm-check compares them). */}}
{{- define "babysitter.workloadRules" -}}
{{- $w := .Values.rbac.workloads }}
{{- if $w.jobs }}
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "patch", "delete", "create"]
{{- end }}
{{- if $w.jobsets }}
- apiGroups: ["jobset.x-k8s.io"]
  resources: ["jobsets"]
  verbs: ["get", "list", "watch", "patch", "delete", "create"]
{{- end }}
{{- if $w.pytorchjobs }}
- apiGroups: ["kubeflow.org"]
  resources: ["pytorchjobs"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if $w.trainjobs }}
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["get", "list", "watch", "patch", "delete", "create"]
{{- end }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "deletecollection"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.rbac.patchConfigMaps }}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}
