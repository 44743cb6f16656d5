{{/* Names, labels, images and the security settings every pod shares. */}}

{{- define "kfnlp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name, plus the chart name unless the release name contains it. */}}
{{- define "kfnlp.fullname" -}}
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

{{- define "kfnlp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kfnlp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kfnlp
{{- end }}

{{- define "kfnlp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kfnlp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kfnlp.mlflow.name" -}}
{{- printf "%s-mlflow" (include "kfnlp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kfnlp.mlflow.selectorLabels" -}}
{{ include "kfnlp.selectorLabels" . }}
app.kubernetes.io/component: mlflow
{{- end }}

{{- define "kfnlp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kfnlp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* REGISTRY/REPOSITORY:TAG[@DIGEST] */}}
{{- define "kfnlp.imageRef" -}}
{{- $ref := printf "%s/%s:%s" .image.registry .image.repository (.image.tag | default .appVersion) }}
{{- if .image.digest }}{{ printf "%s@%s" $ref .image.digest }}{{ else }}{{ $ref }}{{ end }}
{{- end }}

{{- define "kfnlp.image" -}}
{{- include "kfnlp.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "kfnlp.mlflow.image" -}}
{{- include "kfnlp.imageRef" (dict "image" .Values.mlflow.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{/* The S3 Secret every stage and the MLflow server read: existingSecret, else the rendered one. */}}
{{- define "kfnlp.s3SecretName" -}}
{{- default .Values.s3.secretName .Values.s3.existingSecret }}
{{- end }}

{{/* The Secret with MLFLOW_TRACKING_URI for register and promote; empty when there is no registry. */}}
{{- define "kfnlp.registrySecretName" -}}
{{- if .Values.registry.existingSecret }}
{{- .Values.registry.existingSecret }}
{{- else if .Values.mlflow.enabled }}
{{- .Values.registry.secretName }}
{{- end }}
{{- end }}

{{- define "kfnlp.mlflow.url" -}}
{{- printf "http://%s.%s.svc:%d" (include "kfnlp.mlflow.name" .) .Release.Namespace (int .Values.mlflow.service.port) }}
{{- end }}

{{/* Host headers MLflow accepts: the service's names (any port), localhost (port-forward) and extras. */}}
{{- define "kfnlp.mlflow.allowedHosts" -}}
{{- $svc := include "kfnlp.mlflow.name" . }}
{{- $hosts := list }}
{{- range list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) "localhost" "127.0.0.1" }}
{{- $hosts = concat $hosts (list . (printf "%s:*" .)) }}
{{- end }}
{{- concat $hosts .Values.mlflow.allowedHosts | join "," }}
{{- end }}

{{/* What every pod shares: a high non-root UID, RuntimeDefault seccomp, no API token, the pull secret. */}}
{{- define "kfnlp.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecret }}
imagePullSecrets:
  - name: {{ . }}
{{- end }}
{{- end }}

{{- define "kfnlp.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  capabilities:
    drop:
      - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* Writable places for a kfnlp container on a read-only root: its HOME (KFNLP_HOME is under it) and /tmp. */}}
{{- define "kfnlp.kfnlpMounts" -}}
- name: home
  mountPath: /home/kfnlp
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "kfnlp.kfnlpVolumes" -}}
- name: home
  emptyDir:
    sizeLimit: 256Mi
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}
