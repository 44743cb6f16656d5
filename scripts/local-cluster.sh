#!/usr/bin/env bash
# Stand up kfnlp on a laptop: a kind (default) or minikube cluster with Kubeflow Pipelines
# standalone at a pinned version, the locally built kfnlp image, the kfnlp chart, and one
# run of the demo pipeline. See docs/local-cluster.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
FILES="$HERE/local-cluster"

PROVIDER="${PROVIDER:-kind}"                # kind or minikube
CLUSTER_NAME="${CLUSTER_NAME:-kfnlp}"
KFP_VERSION="${KFP_VERSION:-2.17.0}"        # the backend matching the project's kfp / kfp-kubernetes pins
KFP_MANIFESTS="github.com/kubeflow/pipelines/manifests/kustomize"
NAMESPACE=kubeflow                          # KFP standalone runs every pipeline pod here
RELEASE=kfnlp
IMAGE="ghcr.io/kfnlp/kfnlp:0.1.0"           # `kfnlp images build`'s default tag, the chart's default image
KFNLP="${KFNLP:-$REPO/.venv/bin/kfnlp}"
PIPELINE="${PIPELINE:-mlm-adapt}"
UI_PORT="${UI_PORT:-8080}"
SKIP_BUILD="${SKIP_BUILD:-0}"               # 1: the image is built already

usage() {
    cat <<EOF
usage: scripts/local-cluster.sh up|down|status

  up      create the cluster (or reuse it), install Kubeflow Pipelines $KFP_VERSION, build and
          load the kfnlp image, install the chart, run its helm tests, submit $PIPELINE and wait
  down    delete the cluster
  status  nodes, pods in $NAMESPACE and the chart release

environment: PROVIDER=kind|minikube (kind)  CLUSTER_NAME ($CLUSTER_NAME)  KFP_VERSION ($KFP_VERSION)
             PIPELINE ($PIPELINE)  UI_PORT ($UI_PORT)  SKIP_BUILD=1  KFNLP (path of the kfnlp command)
EOF
}

log() { echo "local-cluster: $*" >&2; }
die() {
    echo "local-cluster: error: $*" >&2
    exit 1
}

# Fail before touching anything when a tool is missing.
need() {
    local missing=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing: ${missing[*]} (install them, see docs/local-cluster.md)"
    fi
}

context() {
    case "$PROVIDER" in
        kind) echo "kind-$CLUSTER_NAME" ;;
        minikube) echo "$CLUSTER_NAME" ;;
    esac
}

kc() { kubectl --context "$(context)" "$@"; }

create_cluster() {
    case "$PROVIDER" in
        kind)
            if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
                log "reusing kind cluster $CLUSTER_NAME"
            else
                kind create cluster --name "$CLUSTER_NAME" --config "$FILES/kind-config.yaml" --wait 180s
            fi
            ;;
        minikube)
            minikube -p "$CLUSTER_NAME" status >/dev/null 2>&1 || minikube start -p "$CLUSTER_NAME" --cpus 4 --memory 8g
            ;;
    esac
}

# The documented standalone install: cluster-scoped resources, then the platform-agnostic
# environment, which runs on kind and minikube and brings the object store (MinIO up to KFP
# 2.14, SeaweedFS behind the same minio-service name since 2.15) that kfnlp reuses.
install_kfp() {
    log "installing Kubeflow Pipelines $KFP_VERSION"
    kc apply -k "$KFP_MANIFESTS/cluster-scoped-resources?ref=$KFP_VERSION"
    kc wait --for condition=established --timeout=60s crd/applications.app.k8s.io
    kc apply -k "$KFP_MANIFESTS/env/platform-agnostic?ref=$KFP_VERSION"
    log "waiting for Kubeflow Pipelines (several minutes on first pull)"
    kc -n "$NAMESPACE" wait --for=condition=Available deployment --all --timeout=20m
}

load_image() {
    if [[ "$SKIP_BUILD" != 1 ]]; then
        "$KFNLP" images build --tag "$IMAGE"
    fi
    case "$PROVIDER" in
        kind) kind load docker-image "$IMAGE" --name "$CLUSTER_NAME" ;;
        minikube) minikube -p "$CLUSTER_NAME" image load "$IMAGE" ;;
    esac
}

# kfnlp-s3 from KFP's own object-store credentials, through files (never argv) in a private
# temporary directory, removed however the function ends: a subshell, so that its EXIT trap
# runs when a step fails under set -e (or on Ctrl-C) and replaces no trap of the script.
create_s3_secret() (
    local dir
    umask 077
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
    trap 'exit 130' INT TERM
    kc -n "$NAMESPACE" get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d >"$dir/AWS_ACCESS_KEY_ID"
    kc -n "$NAMESPACE" get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d >"$dir/AWS_SECRET_ACCESS_KEY"
    printf '%s' "http://minio-service.$NAMESPACE:9000" >"$dir/AWS_ENDPOINT_URL_S3"
    printf '%s' "us-east-1" >"$dir/AWS_DEFAULT_REGION"
    kc -n "$NAMESPACE" create secret generic kfnlp-s3 --from-file="$dir" --dry-run=client -o yaml | kc apply -f -
)

# kfnlp-mlflow, the registry Secret of the chart's MLflow (mlflow.auth.enabled): its URI, and a
# generated admin login and CSRF key, the same way. Kept when it exists: MLflow creates the admin
# once, on its first start, so a new password would lock the pipelines out.
create_registry_secret() (
    local dir
    if kc -n "$NAMESPACE" get secret kfnlp-mlflow >/dev/null 2>&1; then
        log "reusing Secret kfnlp-mlflow"
        return 0
    fi
    umask 077
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
    trap 'exit 130' INT TERM
    printf '%s' "http://$RELEASE-mlflow.$NAMESPACE.svc:5000" >"$dir/MLFLOW_TRACKING_URI"
    printf '%s' admin >"$dir/MLFLOW_TRACKING_USERNAME"
    head -c 24 /dev/urandom | base64 | tr -d '\n' >"$dir/MLFLOW_TRACKING_PASSWORD"
    head -c 32 /dev/urandom | base64 | tr -d '\n' >"$dir/MLFLOW_FLASK_SERVER_SECRET_KEY"
    kc -n "$NAMESPACE" create secret generic kfnlp-mlflow --from-file="$dir" --dry-run=client -o yaml | kc apply -f -
)

install_chart() {
    log "installing the kfnlp chart"
    helm --kube-context "$(context)" upgrade --install "$RELEASE" "$REPO/charts/kfnlp" \
        --namespace "$NAMESPACE" --values "$FILES/values.yaml" --wait --timeout 15m
    helm --kube-context "$(context)" test "$RELEASE" --namespace "$NAMESPACE" --timeout 10m
}

submit_demo() {
    local work pf
    work="$(mktemp -d)"
    kc -n "$NAMESPACE" get configmap "$RELEASE-config" -o jsonpath='{.data.cluster\.yaml}' >"$work/cluster.yaml"
    kc -n "$NAMESPACE" port-forward svc/ml-pipeline-ui "$UI_PORT:80" >"$work/port-forward.log" 2>&1 &
    pf=$!
    # shellcheck disable=SC2064 # expand now: these locals are gone when the trap runs
    trap "kill $pf 2>/dev/null || true; rm -rf '$work'" EXIT
    local tries=0
    until curl -fsS -o /dev/null "http://localhost:$UI_PORT/apis/v2beta1/healthz"; do
        ((++tries < 30)) || die "the KFP UI port-forward did not answer: $(cat "$work/port-forward.log")"
        sleep 2
    done
    "$KFNLP" submit "$PIPELINE" --host "http://localhost:$UI_PORT" --config "$work/cluster.yaml" \
        --experiment local-cluster --wait --timeout 3600
}

up() {
    need kubectl helm curl base64 "$PROVIDER"
    [[ -x "$KFNLP" ]] || die "no kfnlp command at $KFNLP: run make setup, or set KFNLP"
    if [[ "$PROVIDER" == kind && "$SKIP_BUILD" != 1 ]]; then
        need docker
    fi
    create_cluster
    install_kfp
    load_image
    create_s3_secret
    create_registry_secret
    install_chart
    submit_demo
    log "done: kubectl --context $(context) -n $NAMESPACE port-forward svc/ml-pipeline-ui $UI_PORT:80, then http://localhost:$UI_PORT"
}

down() {
    need "$PROVIDER"
    case "$PROVIDER" in
        kind) kind delete cluster --name "$CLUSTER_NAME" ;;
        minikube) minikube delete -p "$CLUSTER_NAME" ;;
    esac
}

status() {
    need kubectl helm
    kc get nodes
    kc -n "$NAMESPACE" get pods
    helm --kube-context "$(context)" status "$RELEASE" --namespace "$NAMESPACE"
}

main() {
    case "$PROVIDER" in
        kind | minikube) ;;
        *) die "PROVIDER must be kind or minikube, got '$PROVIDER'" ;;
    esac
    case "${1:-}" in
        up) up ;;
        down) down ;;
        status) status ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

# Sourced (the tests call single functions), it only defines them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
