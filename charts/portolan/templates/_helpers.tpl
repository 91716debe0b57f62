{{- define "portolan.labels" -}}
app.kubernetes.io/name: portolan
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "portolan.operatorName" -}}{{ .Release.Name }}-operator{{- end -}}

{{- define "portolan.settings" -}}
{{- $settings := deepCopy .Values.operator.settings -}}
{{- $_ := set $settings "shardServiceAccount" "portolan-shard" -}}
{{- if not (hasKey .Values.operator.settings "shardImage") -}}
{{- $_ := set $settings "shardImage" (printf "%s:%s" .Values.image.repository .Values.image.tag) -}}
{{- end -}}
{{- if le (int .Values.operator.replicas) 1 -}}
{{- $_ := set $settings "peering" nil -}}
{{- end -}}
{{- toYaml $settings -}}
{{- end -}}
