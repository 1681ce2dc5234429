#!/bin/sh
# Starts SeaweedFS's S3 gateway with the one identity DefectLens uses, taken from the environment
# (S3_ACCESS_KEY / S3_SECRET_KEY, like DB_PASSWORD): no credentials are committed to the repository.
# `scripts/compose-secrets.sh` generates them into .env at setup.
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY (scripts/compose-secrets.sh generates it)}"
: "${S3_SECRET_KEY:?set S3_SECRET_KEY (scripts/compose-secrets.sh generates it)}"
case "$S3_ACCESS_KEY$S3_SECRET_KEY" in
  *'"'* | *'\'* | *' '*) echo "S3 keys may not contain quotes, backslashes or spaces" >&2; exit 2 ;;
esac
config="${S3_CONFIG:-/tmp/s3.json}"
umask 077
cat > "$config" <<JSON
{"identities": [{"name": "defectlens",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed "$@"
