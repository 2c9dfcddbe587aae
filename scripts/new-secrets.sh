#!/bin/sh
# Writes the secrets docker-compose.yml and compose.serve.yml need into ./secrets/, one random
# value per file, and never overwrites one that exists: run it again at any time (after an
# upgrade that adds a secret, say) and it only fills in what is missing.
#
#   scripts/new-secrets.sh
#
#   messenger_jwt_secret         HS256 token secret (replace it with your login service's)
#   messenger_gateway_secret     what the broker's plugin sends to the API's gateway
#   messenger_database_password  MariaDB's `messenger` user
#   mariadb_root_password        MariaDB's root (backups, maintenance)
#
# Each value is 32 random bytes as 64 hex digits: long enough for every check (JWT >= 32,
# gateway >= 16 characters) and safe in a URL and in mosquitto.conf. No trailing newline.
#
# Permissions: the directory is 0700, so no other user of this host can read the files. The
# files themselves are 0644 because Compose bind-mounts a file secret into the containers with
# its owner and mode from the host (it ignores `uid`, `gid` and `mode` outside Swarm), and the
# containers run as their own non-root users (10001 for Messenger, 1883 for the broker), who
# could not read a 0600 file of yours.
#
# Rotating one: delete its file, run this again, then `docker compose up -d`. The database
# password is MariaDB's only when the data volume is first created: change it in MariaDB too
# (ALTER USER) before you restart the services with a new one.
set -eu
cd "$(dirname "$0")/.."

dir=secrets
mkdir -p "$dir"
chmod 0700 "$dir"

random_hex() {  # 32 bytes from the kernel's CSPRNG, as 64 hex digits
  od -An -vtx1 -N32 /dev/urandom | tr -d ' \n'
}

for name in messenger_jwt_secret messenger_gateway_secret messenger_database_password \
  mariadb_root_password; do
  file=$dir/$name
  if [ -e "$file" ]; then
    if [ ! -s "$file" ]; then
      echo "new-secrets: $file exists but is empty; delete it and run this again" >&2
      exit 1
    fi
    echo "kept    $file"
    continue
  fi
  value=$(random_hex)
  if [ "${#value}" -ne 64 ]; then
    echo "new-secrets: could not read 32 random bytes from /dev/urandom" >&2
    exit 1
  fi
  # noclobber: the write fails rather than replace a file that appeared meanwhile
  (umask 022 && set -C && printf '%s' "$value" >"$file")
  chmod 0644 "$file"
  echo "created $file"
done
