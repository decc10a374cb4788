#!/usr/bin/env bash
# make images: builds the three service images and the runner (CPU and GPU)
# from the repository root and pushes them to the deployment's registry.
# Needs Docker with buildx and gcloud; the registry exists after
# `make infra-base`. Settings (environment): REGISTRY (default: the Terraform
# output `registry`), TAG (default: the commit), RUNNER_BASE, RUNNER_GPU_BASE,
# TERRAFORM.
set -euo pipefail
cd "$(dirname "$0")/.."

terraform=${TERRAFORM:-terraform}
registry=${REGISTRY:-}
if [[ -z $registry ]]; then
    registry=$("$terraform" -chdir=infra output -raw registry 2>/dev/null | grep -E '^[a-z0-9-]+-docker\.pkg\.dev/[^[:space:]]+$' || true)
fi
if [[ -z $registry ]]; then
    echo "no registry: run make infra-base first, or pass REGISTRY=REGION-docker.pkg.dev/PROJECT/REPOSITORY" >&2
    exit 2
fi
tag=${TAG:-$(git rev-parse --short=12 HEAD)}
runner_base=${RUNNER_BASE:-gcr.io/deeplearning-platform-release/base-cpu}
runner_gpu_base=${RUNNER_GPU_BASE:-gcr.io/deeplearning-platform-release/base-gpu}

gcloud auth configure-docker "${registry%%/*}" --quiet

build_and_push() { # IMAGE DOCKERFILE [docker build arguments...]
    local image=$registry/$1:$tag dockerfile=$2
    shift 2
    docker build --platform linux/amd64 --file "$dockerfile" --tag "$image" "$@" .
    docker push "$image"
}

for service in github-webhook gcs-events scheduler; do
    build_and_push "$service" "functions/$service/Dockerfile"
done
build_and_push runner cli/Dockerfile --build-arg "BASE_IMAGE=$runner_base"
build_and_push runner-gpu cli/Dockerfile --build-arg "BASE_IMAGE=$runner_gpu_base"

echo "pushed $registry/{github-webhook,gcs-events,scheduler,runner,runner-gpu}:$tag"
