{{/*
One CRD of the chart, read from files/crds/ (a copy of the repository's
crds/, kept in step by hack/helm/sync-crds.sh and checked by the chart tests).
Argument: (list $ "<file name>").
*/}}
{{- define "mlops-operator.crd" -}}
{{- $root := index . 0 }}
{{- $file := printf "files/crds/%s" (index . 1) }}
{{- if $root.Values.crds.enabled }}
{{- $crd := $root.Files.Get $file | fromYaml }}
{{- if or $crd.Error (not $crd.spec) }}
{{- fail (printf "%s is missing or unreadable (%v): run hack/helm/sync-crds.sh" $file ($crd.Error | default "empty")) }}
{{- end }}
{{- $labels := merge (include "mlops-operator.labels" $root | fromYaml) ($crd.metadata.labels | default dict) }}
{{- $_ := set $crd.metadata "labels" $labels }}
{{- $annotations := merge (deepCopy ($root.Values.crds.annotations | default dict)) ($crd.metadata.annotations | default dict) }}
{{- if $root.Values.crds.keep }}
{{- $_ := set $annotations "helm.sh/resource-policy" "keep" }}
{{- end }}
{{- if $annotations }}
{{- $_ := set $crd.metadata "annotations" $annotations }}
{{- end }}
{{ toYaml $crd }}
{{- end }}
{{- end }}
