{{- define "minilab.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "minilab.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "minilab.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "minilab.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Environment every component shares. */}}
{{- define "minilab.env" -}}
- name: AWS_REGION
  value: {{ .Values.region | quote }}
- name: MINILAB_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if ne .component "operator" }}
- name: MINILAB_UPLOADS_BUCKET
  value: {{ .Values.buckets.uploads | quote }}
- name: MINILAB_PROCESSED_BUCKET
  value: {{ .Values.buckets.processed | quote }}
{{- end }}
{{- if .Values.recipes }}
- name: MINILAB_RECIPES
  value: /etc/minilab/recipes.yaml
{{- end }}
{{- end -}}

{{/* The recipes ConfigMap as a volume and its mount: the api and the worker use the
   recipes, the operator checks that jobs name one. */}}
{{- define "minilab.recipesVolume" -}}
- name: recipes
  configMap:
    name: {{ include "minilab.fullname" . }}-recipes
{{- end -}}

{{- define "minilab.recipesMount" -}}
- name: recipes
  mountPath: /etc/minilab
  readOnly: true
{{- end -}}

{{- define "minilab.probes" -}}
livenessProbe:
  httpGet: {path: /livez, port: {{ . }}}
  periodSeconds: 10
readinessProbe:
  httpGet: {path: /readyz, port: {{ . }}}
  periodSeconds: 5
{{- end -}}

{{/* What every release needs, checked once (deployments.yaml includes it): the
   defaults alone must never render pods that cannot work. */}}
{{- define "minilab.required" -}}
{{- if not (and .Values.buckets.uploads .Values.buckets.processed) -}}
{{- fail "buckets.uploads and buckets.processed are required: the bucket uploads arrive in and the bucket outputs go to (created by the chart with ack.enabled)" -}}
{{- end -}}
{{- if not (include "minilab.queueUrl" .) -}}
{{- fail "queueUrl is required: the SQS queue that receives the uploads bucket's events (or ack.enabled, which creates it)" -}}
{{- end -}}
{{- include "minilab.requireRoles" . -}}
{{- include "minilab.requireKinds" . -}}
{{- end -}}

{{/* Each pod's AWS identity, when it can be checked: with IRSA and no ACK, each
     component's role must be given (a pod without one would fall back to the node's
     role, which the NetworkPolicies block, and fail at its first request); `none`
     (credentials from extraEnv or the environment) cannot go with ACK's roles. */}}
{{- define "minilab.requireRoles" -}}
{{- if and (eq .Values.awsIdentity "irsa") (not .Values.ack.enabled) -}}
{{- $components := list "api" "worker" "operator" -}}
{{- if .Values.buckets.site -}}
{{- $components = append $components "publish" -}}
{{- end -}}
{{- range $components -}}
{{- if not (index $.Values . "roleArn") -}}
{{- fail (printf "%s.roleArn is required with awsIdentity irsa and ack.enabled false: the IAM role in its service account's annotation (or awsIdentity none, when the pods get credentials another way, e.g. extraEnv)" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.awsIdentity "none") .Values.ack.enabled -}}
{{- fail "ack.enabled makes IAM roles for awsIdentity irsa or podIdentity, not none" -}}
{{- end -}}
{{- end -}}

{{/* On a cluster (a `lookup` answers), every custom kind the values ask for must be
     served there: a clear failure naming what to install, not Helm's "no matches for
     kind". Without a cluster (helm template, GitOps rendering) nothing is checked. */}}
{{- define "minilab.requireKinds" -}}
{{- if lookup "v1" "Namespace" "" "kube-system" -}}
{{- $needed := list -}}
{{- if .Values.keda.enabled -}}
{{- $needed = append $needed (list "keda.sh/v1alpha1/ScaledObject" "keda.enabled needs KEDA (its CRDs)") -}}
{{- end -}}
{{- if .Values.serviceMonitor.enabled -}}
{{- $needed = append $needed (list "monitoring.coreos.com/v1/ServiceMonitor" "serviceMonitor.enabled needs the Prometheus operator's CRDs") -}}
{{- end -}}
{{- if .Values.ack.enabled -}}
{{- $needed = append $needed (list "iam.services.k8s.aws/v1alpha1/Role" "ack.enabled needs the ACK IAM controller") -}}
{{- if .Values.ack.manage.buckets -}}
{{- $needed = append $needed (list "s3.services.k8s.aws/v1alpha1/Bucket" "ack.manage.buckets needs the ACK S3 controller") -}}
{{- end -}}
{{- if .Values.ack.manage.queues -}}
{{- $needed = append $needed (list "sqs.services.k8s.aws/v1alpha1/Queue" "ack.manage.queues needs the ACK SQS controller") -}}
{{- end -}}
{{- if .Values.ack.cloudfront.enabled -}}
{{- $needed = append $needed (list "cloudfront.services.k8s.aws/v1alpha1/Distribution" "ack.cloudfront.enabled needs the ACK CloudFront controller") -}}
{{- end -}}
{{- if .Values.ack.cloudwatch.enabled -}}
{{- $needed = append $needed (list "cloudwatch.services.k8s.aws/v1alpha1/MetricAlarm" "ack.cloudwatch.enabled needs the ACK CloudWatch controller") -}}
{{- end -}}
{{- if .Values.ack.route53.enabled -}}
{{- $needed = append $needed (list "route53.services.k8s.aws/v1alpha1/RecordSet" "ack.route53.enabled needs the ACK Route 53 controller") -}}
{{- end -}}
{{- end -}}
{{- range $needed -}}
{{- if not ($.Capabilities.APIVersions.Has (index . 0)) -}}
{{- fail (printf "%s: the cluster does not serve %s; install it first (see the README's prerequisites)" (index . 1) (index . 0)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The kinds the chart makes through ACK, as a JSON list of [group, Kind, plural]
     (all v1alpha1): the operator counts their objects by what their controllers
     report (MINILAB_AWS_RESOURCES) and may list and watch them (rbac.yaml). */}}
{{- define "minilab.ackKinds" -}}
{{- $kinds := list -}}
{{- if .Values.ack.enabled -}}
{{- $kinds = append $kinds (list "iam.services.k8s.aws" "Role" "roles") -}}
{{- if .Values.ack.manage.buckets -}}
{{- $kinds = append $kinds (list "s3.services.k8s.aws" "Bucket" "buckets") -}}
{{- end -}}
{{- if .Values.ack.manage.queues -}}
{{- $kinds = append $kinds (list "sqs.services.k8s.aws" "Queue" "queues") -}}
{{- end -}}
{{- if .Values.ack.cloudfront.enabled -}}
{{- $kinds = append $kinds (list "cloudfront.services.k8s.aws" "Distribution" "distributions") -}}
{{- $kinds = append $kinds (list "cloudfront.services.k8s.aws" "OriginAccessControl" "originaccesscontrols") -}}
{{- if .Values.api.serveImages -}}
{{- $kinds = append $kinds (list "cloudfront.services.k8s.aws" "CachePolicy" "cachepolicies") -}}
{{- end -}}
{{- end -}}
{{- if .Values.ack.route53.enabled -}}
{{- $kinds = append $kinds (list "route53.services.k8s.aws" "RecordSet" "recordsets") -}}
{{- end -}}
{{- if .Values.ack.cloudwatch.enabled -}}
{{- $kinds = append $kinds (list "cloudwatch.services.k8s.aws" "MetricAlarm" "metricalarms") -}}
{{- end -}}
{{- end -}}
{{- toJson $kinds -}}
{{- end -}}

{{/* Proxies in front of the API that append to X-Forwarded-For: api.trustedProxyHops,
   else 1 for the ALB of the Ingress and 1 more for CloudFront in front of it. */}}
{{- define "minilab.trustedProxyHops" -}}
{{- if kindIs "invalid" .Values.api.trustedProxyHops -}}
{{- $hops := 0 -}}
{{- if .Values.ingress.enabled -}}
{{- $hops = add $hops 1 -}}
{{- if and .Values.ack.enabled .Values.ack.cloudfront.enabled -}}
{{- $hops = add $hops 1 -}}
{{- end -}}
{{- end -}}
{{- $hops -}}
{{- else -}}
{{- .Values.api.trustedProxyHops -}}
{{- end -}}
{{- end -}}

{{/* The queue's URL: queueUrl, or the queue the chart creates with ack.enabled. */}}
{{- define "minilab.queueUrl" -}}
{{- if .Values.queueUrl -}}
{{- .Values.queueUrl -}}
{{- else if .Values.ack.enabled -}}
{{- printf "https://sqs.%s.amazonaws.com/%s/%s" .Values.region .Values.ack.accountId (include "minilab.queueName" .) -}}
{{- end -}}
{{- end -}}

{{/* The queue's ARN, from its URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME). */}}
{{- define "minilab.queueArn" -}}
{{- $parts := regexSplit "/" (include "minilab.queueUrl" .) -1 -}}
{{- $region := index (regexSplit "\\." (index $parts 2) -1) 1 -}}
{{- printf "arn:aws:sqs:%s:%s:%s" $region (index $parts 3) (index $parts 4) -}}
{{- end -}}

{{/* The stem of every AWS name the chart makes (queues, roles, the access control):
   ack.namePrefix, else {namespace}-{release}, so two releases of one name in two
   namespaces of one account never adopt each other's resources. At most 55
   characters (IAM role names allow 64, the longest suffix is "-operator"): a longer
   stem is cut and ends with a hash of the whole. */}}
{{- define "minilab.awsName" -}}
{{- $stem := .Values.ack.namePrefix | default (printf "%s-%s" .Release.Namespace (include "minilab.fullname" .)) -}}
{{- if le (len $stem) 55 -}}
{{- $stem -}}
{{- else -}}
{{- printf "%s-%s" (trunc 46 $stem | trimSuffix "-") (sha256sum $stem | trunc 8) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the events queue may name its dead-letter queue in a redrive policy:
   the SQS controller made the DLQ (its ARN in status.ackResourceMetadata.arn, the
   field ACK writes, and ACK.ResourceSynced True; read by `helm upgrade`, as the Helm
   engine looks up objects on a cluster only), or ack.redrivePolicy is `always`. */}}
{{- define "minilab.deadLetterQueueReady" -}}
{{- $dlq := lookup "sqs.services.k8s.aws/v1alpha1" "Queue" .Release.Namespace (printf "%s-events-dlq" (include "minilab.fullname" .)) -}}
{{- $synced := false -}}
{{- range (dig "status" "conditions" (list) $dlq) -}}
{{- if and (eq (get . "type") "ACK.ResourceSynced") (eq (get . "status") "True") -}}
{{- $synced = true -}}
{{- end -}}
{{- end -}}
{{- if or (eq .Values.ack.redrivePolicy "always") (and $synced (dig "status" "ackResourceMetadata" "arn" "" $dlq)) -}}
true
{{- end -}}
{{- end -}}

{{/* Images one worker pod processes at once: worker.concurrency, or its CPU request
   rounded up (as the downward API gives it to the pod). */}}
{{- define "minilab.workerSlots" -}}
{{- $cpu := toString .Values.worker.resources.requests.cpu -}}
{{- $cores := ternary (divf (trimSuffix "m" $cpu) 1000) (float64 $cpu) (hasSuffix "m" $cpu) -}}
{{- .Values.worker.concurrency | default (max 1 (int (ceil $cores))) -}}
{{- end -}}

{{/* The worker's memory limit in MiB: its base plus, per slot, the most one image may
   hold: 12 bytes per pixel (a 16-bit RGBA decode and its 8-bit copy) plus 96 MiB (the
   decoder's buffers, the source bytes, the outputs). tests/chart checks it against
   the peak memory of `minilab process` on the worst image allowed. */}}
{{- define "minilab.workerMemoryMi" -}}
{{- $perImage := add (div (mul .Values.worker.maxPixels 12) 1048576) 97 -}}
{{- add .Values.worker.memoryBaseMi (mul (include "minilab.workerSlots" . | int) $perImage) -}}
{{- end -}}

{{- define "minilab.queueName" -}}
{{- printf "%s-events" (include "minilab.awsName" .) -}}
{{- end -}}

{{/* A component's IAM role for IRSA: {component}.roleArn, or the role the chart
     creates with ack.enabled. Called with (dict "root" $ "component" NAME). */}}
{{- define "minilab.roleArn" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.roleArn -}}
{{- $values.roleArn -}}
{{- else if .root.Values.ack.enabled -}}
{{- printf "arn:aws:iam::%s:role/%s-%s" .root.Values.ack.accountId (include "minilab.awsName" .root) .component -}}
{{- end -}}
{{- end -}}

{{/* An IAM trust policy (JSON) letting one service account assume a role: through
     the cluster's OIDC provider (awsIdentity irsa), or through EKS Pod Identity
     (awsIdentity podIdentity: the pods.eks.amazonaws.com service, only for the
     session tags of this cluster, namespace and service account). With `keda`
     (.Values.keda), KEDA's operator too: its service account through the OIDC
     provider (IRSA only: KEDA reads the workload's IRSA annotation), and its role
     if keda.operatorRoleArn is set.
     Called with (dict "root" $ "serviceAccount" NAME ["keda" .Values.keda]). */}}
{{- define "minilab.trustPolicy" -}}
{{- $v := .root.Values.ack -}}
{{- $statements := list -}}
{{- if eq .root.Values.awsIdentity "podIdentity" -}}
{{- $tags := dict "aws:RequestTag/kubernetes-namespace" .root.Release.Namespace "aws:RequestTag/kubernetes-service-account" .serviceAccount "aws:RequestTag/eks-cluster-arn" (printf "arn:aws:eks:%s:%s:cluster/%s" .root.Values.region $v.accountId $v.clusterName) -}}
{{- $statements = append $statements (dict "Effect" "Allow" "Action" (list "sts:AssumeRole" "sts:TagSession") "Principal" (dict "Service" "pods.eks.amazonaws.com") "Condition" (dict "StringEquals" $tags)) -}}
{{- else -}}
{{- $accounts := list (list .root.Release.Namespace .serviceAccount) -}}
{{- with .keda -}}
{{- $accounts = append $accounts (list .serviceAccount.namespace .serviceAccount.name) -}}
{{- end -}}
{{- range $accounts -}}
{{- $condition := dict (printf "%s:sub" $v.oidcProvider) (printf "system:serviceaccount:%s:%s" (index . 0) (index . 1)) (printf "%s:aud" $v.oidcProvider) "sts.amazonaws.com" -}}
{{- $statements = append $statements (dict "Effect" "Allow" "Action" "sts:AssumeRoleWithWebIdentity" "Principal" (dict "Federated" (printf "arn:aws:iam::%s:oidc-provider/%s" $v.accountId $v.oidcProvider)) "Condition" (dict "StringEquals" $condition)) -}}
{{- end -}}
{{- end -}}
{{- with .keda -}}
{{- with .operatorRoleArn -}}
{{- /* Under Pod Identity KEDA's own session carries session tags, which are
       transitive: assuming the worker's role then needs sts:TagSession too. */ -}}
{{- $actions := ternary (list "sts:AssumeRole" "sts:TagSession") "sts:AssumeRole" (eq $.root.Values.awsIdentity "podIdentity") -}}
{{- $statements = append $statements (dict "Effect" "Allow" "Action" $actions "Principal" (dict "AWS" .)) -}}
{{- end -}}
{{- end -}}
{{- dict "Version" "2012-10-17" "Statement" $statements | toJson -}}
{{- end -}}

{{/* What every bucket the chart creates has: no public access, SSE-S3 encryption. */}}
{{- define "minilab.privateBucket" -}}
publicAccessBlock:
  blockPublicACLs: true
  blockPublicPolicy: true
  ignorePublicACLs: true
  restrictPublicBuckets: true
encryption:
  rules:
    - applyServerSideEncryptionByDefault: {sseAlgorithm: AES256}
      bucketKeyEnabled: true
{{- end -}}

{{/* Labels and annotations of an ACK resource: its region (the controller's own would
   win otherwise, while ARNs and URLs use .Values.region) and what deleting it does to
   the AWS resource (`data`: buckets and queues keep images and messages). */}}
{{- define "minilab.ackMetadata" -}}
labels:
  {{- include "minilab.labels" .root | nindent 2 }}
annotations:
  services.k8s.aws/region: {{ .root.Values.region | quote }}
  {{- if .keep }}
  {{- /* Made by a later install step: a rollback (or --atomic) to a revision
         before it must not delete it, nor may uninstall. */}}
  helm.sh/resource-policy: keep
  services.k8s.aws/deletion-policy: retain
  {{- else }}
  services.k8s.aws/deletion-policy: {{ ternary .root.Values.ack.deletionPolicy.data .root.Values.ack.deletionPolicy.other .data }}
  {{- end }}
{{- end -}}


{{/* What CloudFront fills in on an origin left without them (see cloudfront.yaml). */}}
{{- define "minilab.cloudfrontOriginDefaults" -}}
originPath: ""
connectionAttempts: 3
connectionTimeout: 10
customHeaders: {}
originShield: {enabled: false}
{{- end -}}

{{/* What CloudFront fills in on a cache behaviour left without them. */}}
{{- define "minilab.cloudfrontBehaviourDefaults" -}}
smoothStreaming: false
fieldLevelEncryptionID: ""
trustedSigners: {enabled: false}
trustedKeyGroups: {enabled: false}
lambdaFunctionAssociations: {}
functionAssociations: {}
{{- end -}}

{{/* A pod's labels (podLabels, then the selector, which wins) and annotations
   (podAnnotations, then the chart's own). Called with
   (dict "root" $ "component" NAME "annotations" DICT). */}}
{{- define "minilab.podMetadata" -}}
labels:
  {{- merge (include "minilab.selector" . | fromYaml) (deepCopy .root.Values.podLabels) | toYaml | nindent 2 }}
{{- with merge (deepCopy (.annotations | default dict)) (deepCopy .root.Values.podAnnotations) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Where and how a pod is scheduled and pulled: a component's own nodeSelector,
   tolerations and affinity, else the release's; priorityClassName and
   imagePullSecrets for every pod. Called with (dict "root" $ "values" COMPONENT_VALUES). */}}
{{- define "minilab.podPlacement" -}}
{{- $v := .root.Values -}}
{{- $own := .values | default dict -}}
{{- with $own.nodeSelector | default $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $own.tolerations | default $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $own.affinity | default $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment added to a container: extraEnv, then the component's own. Called
   with (dict "root" $ "values" COMPONENT_VALUES). */}}
{{- define "minilab.extraEnv" -}}
{{- with concat .root.Values.extraEnv ((.values | default dict).extraEnv | default list) }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/* The peer secret (push.existingSecret or the chart's own) as MINILAB_PEER_SECRET,
   given to the API and the workers alike. */}}
{{- define "minilab.peerSecretEnv" -}}
- name: MINILAB_PEER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.push.existingSecret | default (printf "%s-peers" (include "minilab.fullname" .)) }}
      key: secret
{{- end -}}

{{/*
Every address but the instance metadata service's (IPv4 and IPv6): NetworkPolicy
`to` peers for traffic to AWS endpoints and webhooks.
*/}}
{{- define "minilab.internet" -}}
- ipBlock:
    cidr: 0.0.0.0/0
    except: [169.254.169.254/32]
- ipBlock:
    cidr: ::/0
    except: ["fd00:ec2::254/128"]
{{- end }}

{{/* The events queue's policy (JSON): S3 may send to it, for the uploads bucket of
     the queue's own account only. The chart sets it on a queue it makes; NOTES.txt
     prints it for a queue you bring. */}}
{{- define "minilab.queuePolicy" -}}
{{- $queueArn := include "minilab.queueArn" . -}}
{{- $account := index (splitList ":" $queueArn) 4 -}}
{{- $send := dict "Sid" "UploadsBucketOnly" "Effect" "Allow" "Principal" (dict "Service" "s3.amazonaws.com") "Action" "sqs:SendMessage" "Resource" $queueArn "Condition" (dict "ArnEquals" (dict "aws:SourceArn" (printf "arn:aws:s3:::%s" .Values.buckets.uploads)) "StringEquals" (dict "aws:SourceAccount" $account)) -}}
{{- dict "Version" "2012-10-17" "Statement" (list $send) | toJson -}}
{{- end }}

{{/* The CloudFront distribution in front of /i/ (api.serveImages with CloudFront): its
   id from ack.cloudfront.distributionId or the synced Distribution; empty until known. */}}
{{- define "minilab.distributionId" -}}
{{- $v := .Values -}}
{{- if and $v.api.serveImages $v.ack.enabled $v.ack.cloudfront.enabled -}}
{{- $distribution := lookup "cloudfront.services.k8s.aws/v1alpha1" "Distribution" .Release.Namespace (printf "%s-site" (include "minilab.fullname" .)) -}}
{{- $v.ack.cloudfront.distributionId | default (dig "status" "id" "" $distribution) -}}
{{- end -}}
{{- end -}}

{{/* Where outputs are served at stable addresses (api.serveImages): the site's domain
   behind CloudFront, else the Ingress's host; empty: nowhere absolute (statuses name
   the path alone, webhooks no address). */}}
{{- define "minilab.imageBaseUrl" -}}
{{- $v := .Values -}}
{{- if not $v.api.serveImages -}}
{{- else if and $v.ack.enabled $v.ack.cloudfront.enabled -}}
{{- printf "https://%s" $v.domain -}}
{{- else if and $v.ingress.enabled $v.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" (not (empty $v.ingress.certificateArn))) $v.ingress.host -}}
{{- end -}}
{{- end -}}
