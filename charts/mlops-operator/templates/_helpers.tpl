{{/* Names ---------------------------------------------------------------- */}}

{{- define "mlops-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlops-operator.fullname" -}}
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

{{- define "mlops-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlops-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlops-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlops-operator.workloadServiceAccountName" -}}
{{- default (printf "%s-workload" (include "mlops-operator.fullname" .) | trunc 63 | trimSuffix "-") .Values.workloadServiceAccount.name }}
{{- end }}

{{/* Whether the operator is told to run workloads as the workload service account: "true" or "". */}}
{{- define "mlops-operator.assignWorkloadServiceAccount" -}}
{{- $mode := .Values.workloadServiceAccount.assign | toString }}
{{- if not (has $mode (list "auto" "always" "never")) }}
{{- fail (printf "workloadServiceAccount.assign must be auto, always or never, not %q" $mode) }}
{{- end }}
{{- if or (eq $mode "always") (and (eq $mode "auto") .Values.watchNamespaces) }}true{{ end }}
{{- end }}

{{/* The namespaces training and serving pods run in, as far as the chart knows them (JSON list). */}}
{{- define "mlops-operator.workloadNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson (uniq .Values.watchNamespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{- define "mlops-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* Labels --------------------------------------------------------------- */}}

{{- define "mlops-operator.labels" -}}
helm.sh/chart: {{ include "mlops-operator.chart" . }}
{{ include "mlops-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlops-operator
{{- end }}

{{- define "mlops-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlops-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Volumes of the workloads, as the operator receives them (JSON). */}}

{{- define "mlops-operator.storeVolume" -}}
{{- if .Values.store.volume }}
{{- toJson .Values.store.volume }}
{{- else }}
{{- toJson (dict "persistentVolumeClaim" (dict "claimName" (required "store.claimName is required" .Values.store.claimName))) }}
{{- end }}
{{- end }}

{{- define "mlops-operator.feedbackVolume" -}}
{{- if not .Values.feedback.enabled }}
{{- "null" }}
{{- else if .Values.feedback.volume }}
{{- toJson .Values.feedback.volume }}
{{- else }}
{{- toJson (dict "persistentVolumeClaim" (dict "claimName" (required "feedback.claimName is required" .Values.feedback.claimName))) }}
{{- end }}
{{- end }}

{{/* RBAC rules ------------------------------------------------------------ */}}

{{/*
Namespaced rules: what the reconcilers and kopf do inside a watched namespace.
Granted by the ClusterRole when watching all namespaces, by one Role per
namespace otherwise. Keep docs/operations.md (RBAC) in step.
*/}}
{{- define "mlops-operator.namespacedRules" -}}
# The three kinds: watched (kopf lists and watches; reconcilers get). The
# operator never writes their spec or metadata, so no patch or update.
- apiGroups: ["mlops.dev"]
  resources: ["trainingjobs", "modeldeployments", "driftpolicies"]
  verbs: ["get", "list", "watch"]
# A DriftPolicy's retraining run is a TrainingJob the policy owns.
- apiGroups: ["mlops.dev"]
  resources: ["trainingjobs"]
  verbs: ["create"]
# Every decision goes to status, written with a JSON patch.
- apiGroups: ["mlops.dev"]
  resources: ["trainingjobs/status", "modeldeployments/status", "driftpolicies/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers
# (OwnerReferencesPermissionEnforcement); nothing else touches finalizers.
- apiGroups: ["mlops.dev"]
  resources: ["trainingjobs/finalizers", "modeldeployments/finalizers", "driftpolicies/finalizers"]
  verbs: ["update"]
# Training runs: created once per generation, never changed afterwards.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
{{- if .Values.dask.enabled }}
# Distributed training runs: one DaskJob per attempt, deleted (with its Dask cluster) once recorded.
- apiGroups: ["kubernetes.dask.org"]
  resources: ["daskjobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
{{- end }}
# The trainer's termination summary, serving pods' readiness and drift sensors.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Serving: written with server-side apply (patch, and create when the object
# is new), removed when the spec stops asking for them.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events on transitions, the operator's and kopf's (core v1, each one posted new).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if (include "mlops-operator.checksStoreSecret" .) }}
# Object storage: the one Secret the workload pods read their keys from, so a
# wrong key is reported before a pod starts. Only that name, only get.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ .Values.store.s3.secretName | quote }}]
  verbs: ["get"]
{{- end }}
{{- with .Values.tracking.mlflow.secretNames }}
# MLflow: the Secrets TrainingJobs name in spec.tracking.mlflow.credentialsSecret,
# read to move the registry's champion alias on promotion. Only those names, only get.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ range $i, $name := . }}{{ if $i }}, {{ end }}{{ $name | quote }}{{ end }}]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/* Non-empty when the operator gets the S3 settings: an s3:// store or feedback, or store.s3 filled in for
training data on s3:// beside a claim store. */}}
{{- define "mlops-operator.usesS3" -}}
{{- $s3 := .Values.store.s3 }}
{{- if or (hasPrefix "s3://" (toString .Values.store.uri)) (hasPrefix "s3://" (toString .Values.feedback.uri)) $s3.endpoint $s3.region $s3.secretName $s3.caConfigMap }}true{{ end }}
{{- end }}

{{/* Non-empty when the operator reads the store Secret to check the key: only for an s3:// store or feedback
(it checks nothing for training data). */}}
{{- define "mlops-operator.checksStoreSecret" -}}
{{- $locations := or (hasPrefix "s3://" (toString .Values.store.uri)) (hasPrefix "s3://" (toString .Values.feedback.uri)) }}
{{- if and $locations .Values.store.s3.secretName .Values.store.s3.checkSecret }}true{{ end }}
{{- end }}

{{/* Cluster-scoped reads kopf needs in every mode: it scans the CRDs to find the served resources. */}}
{{- define "mlops-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* High availability ------------------------------------------------------ */}}

{{/* Operator pods: replicaCount, else 2 with leader election and 1 without; more than one
     needs leader election, and the Lease timings must let a leader stop before a standby takes over. */}}
{{- define "mlops-operator.replicas" -}}
{{- $le := .Values.leaderElection }}
{{- $replicas := .Values.replicaCount }}
{{- if kindIs "invalid" $replicas }}{{ $replicas = ternary 2 1 $le.enabled }}{{ end }}
{{- if and (gt (int $replicas) 1) (not $le.enabled) }}
{{- fail (printf "replicaCount %d needs leaderElection.enabled=true: without it two operators would reconcile the same objects at once" (int $replicas)) }}
{{- end }}
{{- if $le.enabled }}
{{- if ge (int $le.renewDeadlineSeconds) (int $le.leaseDurationSeconds) }}
{{- fail "leaderElection.renewDeadlineSeconds must be below leaderElection.leaseDurationSeconds (a leader must stop before a standby may take over)" }}
{{- end }}
{{- if le (mul 5 (int $le.renewDeadlineSeconds)) (mul 6 (int $le.retryPeriodSeconds)) }}
{{- fail "leaderElection.renewDeadlineSeconds must be above 1.2 × leaderElection.retryPeriodSeconds (room for more than one renewal)" }}
{{- end }}
{{- end }}
{{- int $replicas }}
{{- end }}

{{- define "mlops-operator.leaseName" -}}
{{- include "mlops-operator.fullname" . }}
{{- end }}
