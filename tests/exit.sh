# One EXIT trap for all the services a test script starts: `on_exit COMMAND` runs
# COMMAND when the shell exits, the last registered first. Sourcing this again keeps
# what is registered.
if [ -z "${MINILAB_ON_EXIT_READY:-}" ]; then
  MINILAB_ON_EXIT=()
  MINILAB_ON_EXIT_READY=1
fi
on_exit() {
  MINILAB_ON_EXIT=("$1" "${MINILAB_ON_EXIT[@]}")
  # Each cleanup runs whatever the others did (a failure under set -e would end the
  # trap early and make it the script's exit status).
  trap 'for c in "${MINILAB_ON_EXIT[@]}"; do eval "$c" || true; done' EXIT
}
