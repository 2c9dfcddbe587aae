#!/bin/bash
# The broker image's HEALTHCHECK: healthy when Mosquitto answers an MQTT CONNECT on the port
# ($1, default 1883) within 3 seconds. The CONNECT carries no credentials, so the answer is a
# refusal (CONNACK "not authorised"); any CONNACK shows that the broker's loop is serving, which
# an open port alone does not. bash for /dev/tcp (the image has no MQTT client).
set -euo pipefail
port=${1:-1883}
exec 3<>"/dev/tcp/127.0.0.1/$port"
# CONNECT, MQTT 3.1.1: remaining length 12, "MQTT", level 4, clean session, keepalive 60, empty client id
printf '\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00' >&3
# a CONNACK starts with the byte 0x20 (a space)
IFS= read -r -t 3 -N 1 -u 3 first
exec 3<&-
[ "$first" = " " ]
