#!/usr/bin/env bash
# Start a node of sweeps/cluster.yaml: Ray, and on the head the MLflow server, bound to the cluster's private
# network only, with MLflow behind basic auth. The credentials come from AWS Secrets Manager (readable through
# the nodes' IAM instance profile), never from this file or a command line.
#
#   sweeps/node_start.sh head                      # MLflow on PRIVATE_IP:5000, Ray head, dashboard on 127.0.0.1
#   sweeps/node_start.sh worker HEAD_PRIVATE_IP    # Ray worker joining the head
#
# Environment: GITUNE_MLFLOW_SECRET (default gitune/mlflow: a JSON secret {"password": …, "flask_secret_key": …}),
# GITUNE_MLFLOW_USER (default gitune), GITUNE_ARTIFACTS (the MLflow artifact destination, head only).
# Every process Ray starts inherits MLFLOW_TRACKING_URI/USERNAME/PASSWORD, so the driver and the trials log to
# the server without a --tracking-uri and without the password appearing anywhere.
set -euo pipefail

role=${1:?usage: node_start.sh head | worker HEAD_PRIVATE_IP}
secret_id=${GITUNE_MLFLOW_SECRET:-gitune/mlflow}
ip=$(hostname -I | awk '{print $1}')  # the node's private address (the instance's first interface)

secret() {  # one field of the JSON secret
    python - "$secret_id" "$1" <<'PY'
import json
import sys

import boto3

value = boto3.client("secretsmanager").get_secret_value(SecretId=sys.argv[1])["SecretString"]
print(json.loads(value)[sys.argv[2]])
PY
}

export MLFLOW_TRACKING_USERNAME=${GITUNE_MLFLOW_USER:-gitune}
MLFLOW_TRACKING_PASSWORD=$(secret password)
export MLFLOW_TRACKING_PASSWORD

case $role in
head)
    auth=$HOME/.mlflow-auth
    mkdir -p "$auth" && chmod 700 "$auth"
    umask 077
    cat > "$auth/basic_auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$auth/users.db
admin_username = $MLFLOW_TRACKING_USERNAME
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    MLFLOW_AUTH_CONFIG_PATH=$auth/basic_auth.ini MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_TRACKING_PASSWORD \
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret flask_secret_key) \
        nohup mlflow server --app-name basic-auth --host "$ip" --port 5000 \
        --backend-store-uri "sqlite:///$HOME/mlflow.db" \
        --artifacts-destination "${GITUNE_ARTIFACTS:?set GITUNE_ARTIFACTS (e.g. s3://BUCKET/gitune/mlflow)}" \
        > "$HOME/mlflow.log" 2>&1 &
    export MLFLOW_TRACKING_URI=http://$ip:5000
    ray stop
    ray start --head --node-ip-address="$ip" --port=6379 --object-manager-port=8076 \
        --autoscaling-config="$HOME/ray_bootstrap_config.yaml" --dashboard-host=127.0.0.1
    ;;
worker)
    head_ip=${2:?usage: node_start.sh worker HEAD_PRIVATE_IP}
    export MLFLOW_TRACKING_URI=http://$head_ip:5000
    ray stop
    ray start --address="$head_ip:6379" --node-ip-address="$ip" --object-manager-port=8076
    ;;
*)
    echo "node_start.sh: expected 'head' or 'worker', got '$role'" >&2
    exit 2
    ;;
esac
