#!/bin/sh
# One-shot MinIO setup of the production stack (compose service `minio-init`, image minio/mc).
# Idempotent: safe to re-run on every `docker compose up`.
#
#   bucket   content                               written by
#   pavedml  landing zone (PAVEDML_LANDING_URI)     upstream systems / the simulator; read by the steps
#            lake (PAVEDML_LAKE_URI), versioned      the steps (raw, features, training, predictions)
#   mlflow   MLflow artifacts (proxied)            the MLflow server only (clients go through it)
#
# Two service accounts, each limited to its bucket; the root credentials stay in minio + here.
# Environment: MC_HOST_local (root URL, set by compose), MINIO_MLFLOW_ACCESS_KEY/_SECRET_KEY,
# MINIO_PAVEDML_ACCESS_KEY/_SECRET_KEY.
set -eu
: "${MC_HOST_local:?}" "${MINIO_MLFLOW_ACCESS_KEY:?}" "${MINIO_MLFLOW_SECRET_KEY:?}"
: "${MINIO_PAVEDML_ACCESS_KEY:?}" "${MINIO_PAVEDML_SECRET_KEY:?}"

policy() {  # policy NAME BUCKET: read/write/delete objects of BUCKET, list it; nothing else
    cat > "/tmp/$1.json" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$2"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$2/*"]}
  ]
}
EOF
    mc admin policy create local "$1" "/tmp/$1.json"
}

account() {  # account ACCESS_KEY SECRET_KEY POLICY
    mc admin user add local "$1" "$2" >/dev/null
    if ! mc admin policy attach local "$3" --user "$1" 2>/dev/null; then
        # attach fails when the policy is attached already (re-runs): check instead
        # (no grep: the mc image is UBI micro, only the shell and coreutils are certain)
        info=$(mc admin user info local "$1")
        case "$info" in
            *"$3"*) ;;
            *) echo "could not attach policy $3 to $1" >&2; exit 1 ;;
        esac
    fi
    echo "service account for $3 ready"
}

for bucket in pavedml mlflow; do
    mc mb --ignore-existing "local/$bucket"
    mc anonymous set none "local/$bucket"
done
# the lake's deletions (a rewritten partition) stay recoverable
mc version enable local/pavedml
policy pavedml-rw pavedml
policy mlflow-rw mlflow
account "$MINIO_PAVEDML_ACCESS_KEY" "$MINIO_PAVEDML_SECRET_KEY" pavedml-rw
account "$MINIO_MLFLOW_ACCESS_KEY" "$MINIO_MLFLOW_SECRET_KEY" mlflow-rw
echo "minio-init: done"
