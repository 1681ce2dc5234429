#!/bin/sh
# Setup for docker-compose: fills the secrets the stack needs into .env (DB_PASSWORD, S3_ACCESS_KEY,
# S3_SECRET_KEY, ADMIN_PASSWORD, RABBITMQ_PASSWORD), each a fresh random value unless .env already has
# one. Run once.
set -eu
env_file="${1:-.env}"
[ -f "$env_file" ] || cp .env.example "$env_file"
random() { python3 -c "import secrets; print(secrets.token_urlsafe($1).replace('-', 'A').replace('_', 'B'))"; }
for pair in DB_PASSWORD:24 S3_ACCESS_KEY:15 S3_SECRET_KEY:30 ADMIN_PASSWORD:18 RABBITMQ_PASSWORD:24; do
  name="${pair%%:*}"
  size="${pair#*:}"
  if ! grep -Eq "^${name}=.+" "$env_file"; then
    sed -i "/^${name}=\$/d" "$env_file"
    echo "${name}=$(random "$size")" >> "$env_file"
    echo "generated ${name} in ${env_file}"
  fi
done
chmod 600 "$env_file"
