#!/usr/bin/env bash
# Install what building the Mosquitto plugin needs (Debian packages), if it is missing.
set -euo pipefail
needed=()
[ -f /usr/include/mosquitto_broker.h ] || needed+=(mosquitto-dev)
[ -f /usr/include/mosquitto.h ] || needed+=(libmosquitto-dev)
[ -f /usr/include/curl/curl.h ] || [ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || needed+=(libcurl4-openssl-dev)
[ -f /usr/include/cjson/cJSON.h ] || needed+=(libcjson-dev)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || needed+=(mosquitto)
command -v gcc >/dev/null || needed+=(gcc)
command -v pkg-config >/dev/null || needed+=(pkg-config)
[ ${#needed[@]} -eq 0 ] && exit 0
echo "installing the plugin's build dependencies: ${needed[*]}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends "${needed[@]}" >/dev/null \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "${needed[@]}" >/dev/null; }
