#!/usr/bin/env bash
# Validates Kubernetes manifests offline against the Kubernetes schemas.
#   scripts/k8s-validate.sh [--dump] [FILE...]   (default: deploy/k8s/*.yaml)
# The first run installs the pinned validator packages from npm into
# build/k8s-validate (schemas: kubernetes-models, @kubernetes-models/keda;
# field lists for the strict check: @kubernetes/client-node's models, unpacked
# only; YAML: yaml); later runs are offline. Needs node and npm (deps.sh test).
# Exit status: 0 valid, 1 invalid, 2 usage or missing tools.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=build/k8s-validate
PINS=(kubernetes-models@5.1.0 @kubernetes-models/keda@2.0.0 yaml@2.9.1)
CLIENT=@kubernetes/client-node@2.0.1
stamp_name="${PINS[*]} $CLIENT"
STAMP="$DIR/.installed-${stamp_name//[\/@ ]/_}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "k8s-validate: needs node and npm (scripts/deps.sh test installs them)" >&2; exit 2
fi
if [ ! -e "$STAMP" ]; then
    echo "k8s-validate: installing ${PINS[*]} $CLIENT into $DIR" >&2
    rm -rf "$DIR"
    mkdir -p "$DIR/client-node"
    echo '{"private":true}' >"$DIR/package.json"
    npm install --silent --no-audit --no-fund --prefix "$DIR" "${PINS[@]}" >/dev/null
    # Only the generated models of the client are used: unpack its tarball
    # (no dependencies, nothing run).
    (cd "$DIR/client-node" && npm pack --silent "$CLIENT" >/dev/null && tar xzf ./*.tgz && rm -f ./*.tgz)
    [ -d "$DIR/client-node/package/dist/gen/models" ] || {
        echo "k8s-validate: $CLIENT has no dist/gen/models" >&2; exit 1; }
    touch "$STAMP"
fi
cp scripts/k8s-validate.mjs "$DIR/validate.mjs"
if [ $# -eq 0 ] || { [ $# -eq 1 ] && [ "$1" = --dump ]; }; then
    set -- "$@" deploy/k8s/*.yaml
fi
args=()
for a in "$@"; do
    case $a in
    --dump) args+=("$a") ;;
    /*) args+=("$a") ;;
    *) args+=("$PWD/$a") ;;
    esac
done
exec node "$DIR/validate.mjs" "${args[@]}"
