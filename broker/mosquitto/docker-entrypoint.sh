#!/bin/sh
# The broker image's entrypoint: render Mosquitto's config from the environment, then run
# Mosquitto on it. Mosquitto expands no environment variables, so this copies the template (the
# repository's mosquitto.conf) and sets its plugin_opt_* lines from:
#
#   MESSENGER_GATEWAY_URL           required: the API's internal port, e.g. http://api:9100
#   MESSENGER_GATEWAY_SECRET        required, or in the file $MESSENGER_SECRETS_DIR/messenger_gateway_secret
#                                   (compose secrets); at least 16 characters, as the API requires
#   MESSENGER_SERVICE_USER          the service account's user id (plugin default: messenger-service)
#   MESSENGER_PLUGIN_TIMEOUT_MS     per gateway call (template: 1000)
#   MESSENGER_PLUGIN_CACHE_TTL_S    how long a CONNECT's answer is cached (template: 30; 0: off)
#   MESSENGER_PLUGIN_CACHE_SIZE     cached tokens (template: 10000)
#   MESSENGER_PLUGIN_OFFLINE_MAX    offline sessions the plugin remembers (plugin default: 10000)
#
#   MESSENGER_SECRETS_DIR           default /run/secrets
#   MOSQUITTO_CONFIG_TEMPLATE       default /etc/mosquitto/messenger.conf
#   MOSQUITTO_CONFIG                the rendered file, readable by its owner only
#                                   (default /run/mosquitto/mosquitto.conf)
#
# Arguments go to mosquitto (e.g. -v). A setting left unset keeps the template's line.
set -eu

template=${MOSQUITTO_CONFIG_TEMPLATE:-/etc/mosquitto/messenger.conf}
config=${MOSQUITTO_CONFIG:-/run/mosquitto/mosquitto.conf}
secrets_dir=${MESSENGER_SECRETS_DIR:-/run/secrets}

die() {
  printf 'broker: %s\n' "$*" >&2
  exit 78 # EX_CONFIG
}

# opt NAME VALUE [integer]: plugin_opt_NAME gets VALUE (passed to awk in the environment)
opt() {
  case $2 in
    *[[:cntrl:][:space:]]*) die "the value for plugin_opt_$1 must not hold spaces or control characters" ;;
  esac
  if [ "${3:-}" = integer ]; then
    case $2 in
      '' | *[!0-9]*) die "the value for plugin_opt_$1 must be a whole number, not \"$2\"" ;;
    esac
  fi
  export "RENDER_OPT_$1=$2"
}

[ -r "$template" ] || die "cannot read the config template $template (MOSQUITTO_CONFIG_TEMPLATE)"

url=${MESSENGER_GATEWAY_URL:-}
case $url in
  http://?* | https://?*) opt gateway_url "$url" ;;
  '') die "MESSENGER_GATEWAY_URL is required: the API's internal address, e.g. http://api:9100" ;;
  *) die "MESSENGER_GATEWAY_URL must be an http:// or https:// URL, not \"$url\"" ;;
esac

secret=${MESSENGER_GATEWAY_SECRET:-}
secret_file=$secrets_dir/messenger_gateway_secret
if [ -z "$secret" ] && [ -f "$secret_file" ]; then
  secret=$(cat "$secret_file") || die "cannot read $secret_file"
fi
[ -n "$secret" ] || die "the gateway secret is required: set MESSENGER_GATEWAY_SECRET or provide $secret_file"
[ "${#secret}" -ge 16 ] || die "the gateway secret must be at least 16 characters (the API refuses shorter ones)"
opt gateway_secret "$secret"
unset secret MESSENGER_GATEWAY_SECRET

if [ -n "${MESSENGER_SERVICE_USER:-}" ]; then opt service_user "$MESSENGER_SERVICE_USER"; fi
if [ -n "${MESSENGER_PLUGIN_TIMEOUT_MS:-}" ]; then opt timeout_ms "$MESSENGER_PLUGIN_TIMEOUT_MS" integer; fi
if [ -n "${MESSENGER_PLUGIN_CACHE_TTL_S:-}" ]; then opt cache_ttl_s "$MESSENGER_PLUGIN_CACHE_TTL_S" integer; fi
if [ -n "${MESSENGER_PLUGIN_CACHE_SIZE:-}" ]; then opt cache_size "$MESSENGER_PLUGIN_CACHE_SIZE" integer; fi
if [ -n "${MESSENGER_PLUGIN_OFFLINE_MAX:-}" ]; then opt offline_max "$MESSENGER_PLUGIN_OFFLINE_MAX" integer; fi

# The template's plugin_opt_NAME line gets the new value in place; an option the template lacks
# follows its `plugin` line (options belong to the plugin line above them).
umask 077
mkdir -p "$(dirname "$config")"
awk '
  BEGIN {
    n = split("gateway_url gateway_secret service_user timeout_ms cache_ttl_s cache_size offline_max", names, " ")
    for (i = 1; i <= n; i++)
      if (("RENDER_OPT_" names[i]) in ENVIRON) value[names[i]] = ENVIRON["RENDER_OPT_" names[i]]
  }
  FNR == NR { if ($1 ~ /^plugin_opt_/) present[substr($1, 12)] = 1; next }
  $1 ~ /^plugin_opt_/ && (substr($1, 12) in value) { print $1 " " value[substr($1, 12)]; next }
  { print }
  $1 == "plugin" {
    plugins++
    for (i = 1; i <= n; i++)
      if ((names[i] in value) && !(names[i] in present)) print "plugin_opt_" names[i] " " value[names[i]]
  }
  END { if (plugins != 1) { print "the template must load exactly one plugin" > "/dev/stderr"; exit 1 } }
' "$template" "$template" >"$config.tmp" || die "cannot render $template into $config"
mv "$config.tmp" "$config"
for name in gateway_url gateway_secret service_user timeout_ms cache_ttl_s cache_size offline_max; do
  unset "RENDER_OPT_$name"
done

exec mosquitto -c "$config" "$@"
