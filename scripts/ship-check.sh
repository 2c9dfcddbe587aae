#!/usr/bin/env bash
# Static checks of what ships (make ship-check; issue 15): hadolint on the Dockerfiles, actionlint
# and the GitHub-workflow schema on the workflows, the compose-spec schema on the compose files,
# yamllint on every YAML file, shellcheck on every shell script, checkov on the Dockerfiles, the
# workflows and the compose files. Any finding fails the run.
#
# The tools come from requirements/ship-tools.lock (exact pins with hashes), in their own venv
# .venv-ship (checkov's pins clash with the project's), reinstalled only when the lock changes.
#
# Files are found, not listed: a Dockerfile or compose file added later is checked from then on.
# Workflows and shell scripts must exist; with SHIP_CHECK_REQUIRE_ALL=1 (.ci/run) Dockerfiles and
# compose files must too, so that a check cannot pass by having found nothing to check.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SHIP_VENV:-.venv-ship}
LOCK=requirements/ship-tools.lock
BIN=$VENV/bin
REQUIRE_ALL=${SHIP_CHECK_REQUIRE_ALL:-0}
started=$SECONDS

# --- tools -----------------------------------------------------------------------------------
if ! "$BIN/python" -c '' 2>/dev/null; then
  echo "ship-check: creating $VENV with $PYTHON"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! cmp -s "$LOCK" "$VENV/.installed-lock"; then
  echo "ship-check: installing the validators from $LOCK into $VENV"
  log=$VENV/pip-install.log
  if ! "$BIN/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$LOCK" >"$log" 2>&1; then
    cat "$log" >&2
    echo "ship-check: installing the validators failed (log above, also in $log)" >&2
    exit 1
  fi
  cp "$LOCK" "$VENV/.installed-lock"
fi

# --- what to check -----------------------------------------------------------------------------
# Everything in the tree but virtualenvs, dependencies, run-time state, build output and caches.
PRUNE=(
  \( -name .git -o -name '.venv*' -o -name node_modules -o -name var -o -name build -o -name dist
  -o -name '*.egg-info' -o -name .mypy_cache -o -name .ruff_cache -o -name .pytest_cache
  -o -name __pycache__ \) -prune
)
found() {  # find expression... -> NUL-separated paths, sorted, without the leading ./
  find . "${PRUNE[@]}" -o -type f \( "$@" \) -print0 | sed -z 's|^\./||' | sort -z
}

mapfile -d '' dockerfiles < <(found -name Dockerfile -o -name '*.Dockerfile' \
  -o \( -name 'Dockerfile.*' ! -name '*.dockerignore' \))
mapfile -d '' workflows < <(find .github/workflows -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) \
  -print0 2>/dev/null | sort -z)
mapfile -d '' composefiles < <(find . -maxdepth 1 -type f \( -name 'compose*.yml' -o -name 'compose*.yaml' \
  -o -name 'docker-compose*.yml' -o -name 'docker-compose*.yaml' \) -print0 | sed -z 's|^\./||' | sort -z)
mapfile -d '' yamlfiles < <(found -name '*.yml' -o -name '*.yaml' -o -name .yamllint)
# Shell scripts: *.sh, and any other file whose first line is a sh/bash/dash/ksh shebang.
shellscripts=()
while IFS= read -r -d '' f; do
  first=""
  [[ $f == *.sh ]] || IFS= read -r -n 256 first <"$f" 2>/dev/null || true
  if [[ $f == *.sh || $first =~ ^\#![[:space:]]*(/usr)?/bin/(env[[:space:]]+)?(ba|da|k)?sh([[:space:]]|$) ]]; then
    shellscripts+=("$f")
  fi
done < <(found ! -name '*.py' ! -name '*.md' ! -name '*.json' ! -name '*.so' ! -name '*.o')

failed=()
section() { printf '\n== %s\n' "$*"; }
listing() {  # label files...
  local label=$1; shift
  echo "checked $# $label: $*"
}
# Files a tool must find: "always" (fail on none) or "require-all" (fail on none only when asked).
enough() {  # tool label always|require-all count
  local tool=$1 label=$2 rule=$3 count=$4
  ((count > 0)) && return 0
  if [[ $rule == always || $REQUIRE_ALL == 1 ]]; then
    echo "ship-check: $tool found no $label to check; the repository must have some" >&2
    failed+=("$tool (no $label)")
  else
    echo "checked 0 $label (none in the tree yet; SHIP_CHECK_REQUIRE_ALL=1 makes this a failure)"
  fi
  return 1
}
run() {  # tool command...: run it, record a failure
  local tool=$1; shift
  if ! "$@"; then failed+=("$tool"); fi
}

# --- hadolint --------------------------------------------------------------------------------
section "hadolint: $("$BIN/hadolint" --version)"
if enough hadolint Dockerfiles require-all "${#dockerfiles[@]}"; then
  run hadolint "$BIN/hadolint" --config .hadolint.yaml "${dockerfiles[@]}"
  listing Dockerfiles "${dockerfiles[@]}"
fi

# --- actionlint ------------------------------------------------------------------------------
section "actionlint: $("$BIN/actionlint" --version | head -n 1) (with $("$BIN/shellcheck" --version | sed -n 's/^version: /shellcheck /p') on run: steps)"
if enough actionlint workflows always "${#workflows[@]}"; then
  run actionlint "$BIN/actionlint" -shellcheck "$BIN/shellcheck" -pyflakes= "${workflows[@]}"
  listing workflows "${workflows[@]}"
fi

# --- check-jsonschema ------------------------------------------------------------------------
section "$("$BIN/check-jsonschema" --version)"
if enough check-jsonschema workflows always "${#workflows[@]}"; then
  run check-jsonschema "$BIN/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
  listing "workflows against vendor.github-workflows" "${workflows[@]}"
fi
if enough check-jsonschema "compose files" require-all "${#composefiles[@]}"; then
  run check-jsonschema "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec "${composefiles[@]}"
  listing "compose files against vendor.compose-spec" "${composefiles[@]}"
fi

# --- yamllint --------------------------------------------------------------------------------
section "$("$BIN/yamllint" --version) (strict, .yamllint.yaml)"
if enough yamllint "YAML files" always "${#yamlfiles[@]}"; then
  run yamllint "$BIN/yamllint" --strict --config-file .yamllint.yaml "${yamlfiles[@]}"
  listing "YAML files" "${yamlfiles[@]}"
fi

# --- shellcheck ------------------------------------------------------------------------------
section "shellcheck $("$BIN/shellcheck" --version | sed -n 's/^version: //p')"
if enough shellcheck "shell scripts" always "${#shellscripts[@]}"; then
  run shellcheck "$BIN/shellcheck" --external-sources "${shellscripts[@]}"
  listing "shell scripts" "${shellscripts[@]}"
fi

# --- checkov ---------------------------------------------------------------------------------
# Frameworks: dockerfile (the Dockerfiles), github_actions (the workflows) and secrets (hard-coded
# credentials, over all of them). Checkov has no Docker Compose framework (3.3.30 lists none), so
# the compose files get the secrets scan only; their structure is checked by the compose-spec
# schema above. Skipped checks, each with its reason, are in .checkov.yaml.
section "checkov $("$BIN/checkov" --version) (--skip-download; dockerfile, github_actions, secrets; skips in .checkov.yaml)"
checkov_files=()
if ((${#dockerfiles[@]})); then checkov_files+=("${dockerfiles[@]}"); fi
checkov_files+=("${workflows[@]}")
if ((${#composefiles[@]})); then checkov_files+=("${composefiles[@]}"); fi
if enough checkov workflows always "${#workflows[@]}"; then
  checkov_args=()
  for f in "${checkov_files[@]}"; do checkov_args+=(--file "$f"); done
  run checkov "$BIN/checkov" --config-file .checkov.yaml --skip-download --quiet --compact \
    --framework dockerfile github_actions secrets "${checkov_args[@]}"
  if ((${#dockerfiles[@]})); then listing "Dockerfiles (dockerfile, secrets)" "${dockerfiles[@]}"; fi
  listing "workflows (github_actions, secrets)" "${workflows[@]}"
  if ((${#composefiles[@]})); then
    listing "compose files (secrets only: checkov has no compose framework)" "${composefiles[@]}"
  fi
fi

# --- verdict ---------------------------------------------------------------------------------
echo
if ((${#failed[@]})); then
  echo "ship-check: FAILED after $((SECONDS - started)) s: ${failed[*]}" >&2
  exit 1
fi
echo "ship-check: all validators passed in $((SECONDS - started)) s"
