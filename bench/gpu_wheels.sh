#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, the wheels bench/gpu_check.sh installs on the GPU
# machine (Python 3.12, no network, torch + CUDA already there) into the ignored folder .whl/.
# DeepSpeed needs these five packages that the device image lacks (checked against its package
# list in the device notes, and with `unzip -p WHEEL '*/METADATA' | grep ^Requires-Dist`):
# hjson, pydantic (-> pydantic-core, annotated-types, typing-inspection, typing-extensions).
# typing-extensions is on the device too; it travels anyway because pydantic-core 2.46 needs
# >= 4.14.1 and the device's version is not recorded. Versions are the ones this project's
# tests run with. The total stays far under the 64 MiB that may travel with the tree.
#
#   bash bench/gpu_wheels.sh      # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl

PACKAGES=(
    deepspeed==0.19.8
    hjson==3.1.0
    pydantic==2.13.4
    pydantic-core==2.46.4
    annotated-types==0.7.0
    typing-inspection==0.4.2
    typing-extensions==4.16.0
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

for spec in "${PACKAGES[@]}"; do
    name=${spec%%==*}
    if ls .whl/"$(echo "$name" | tr - _)"-"${spec##*==}"-*.whl >/dev/null 2>&1; then
        continue  # already fetched
    fi
    if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platform_args[@]}" -d .whl "$spec"; then
        if [ "$name" = deepspeed ]; then
            # no wheel on PyPI (DeepSpeed ships an sdist): build a pure-Python one; its ops are JIT-built
            DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps -w .whl "$spec"
        else
            echo "error: no Python 3.12 x86-64 wheel for $spec" >&2
            exit 1
        fi
    fi
done

# one version of each package: two would stop the install on the device
dupes=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr '[:upper:]' '[:lower:]' | sort | uniq -d)
if [ -n "$dupes" ]; then
    echo "error: several versions in .whl/ of: $dupes (remove the extra ones)" >&2
    exit 1
fi
ls -l .whl/*.whl
du -ch .whl/*.whl | tail -1
