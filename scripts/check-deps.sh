#!/usr/bin/env bash
# The dependency-direction check on its own (it also runs in `make test`): every arrow between
# workspace crates points toward `protocol`; edge-agent and hub never depend on each other.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --locked -p e2e --test dependency_direction
