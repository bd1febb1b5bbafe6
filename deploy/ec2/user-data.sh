#!/bin/bash
# cloud-init user data for one Kennel machine on EC2 (a Debian 12 or Ubuntu 24.04 AMI): it
# installs podman and the AWS CLI, takes this machine's certificate from AWS Secrets Manager,
# and runs the Kennel image under systemd with the instance's private IP as its address
# (README "EC2"). Set the variables below (or template them in at launch); nothing else.
#
# Secrets (made with `kennelctl certs`, README "Using it"), each stored as plain text:
#   ${KENNEL_SECRETS}ca.pem                        the cluster CA's certificate (not its key)
#   ${KENNEL_SECRETS}<name>.pem, <name>-key.pem    this machine's certificate and key
# where <name> is the instance's Name tag (instance metadata tags on), else its instance ID.
# The instance profile needs secretsmanager:GetSecretValue on those, and ECR pull rights.
set -euo pipefail

KENNEL_ROLE=${KENNEL_ROLE:-trainer}                   # coordinator, trainer or inference
KENNEL_COORDINATOR=${KENNEL_COORDINATOR:-10.0.0.5:7070}
KENNEL_IMAGE=${KENNEL_IMAGE:-123456789012.dkr.ecr.us-east-1.amazonaws.com/kennel:latest}
KENNEL_SECRETS=${KENNEL_SECRETS:-kennel/}
KENNEL_GPU=${KENNEL_GPU:-0}                           # 1: kennel-cuda image, NVIDIA toolkit present
KENNEL_DATA=${KENNEL_DATA:-/data}                     # datasets (trainers, coordinator)

exec > >(tee -a /var/log/kennel-user-data.log) 2>&1
say() { echo "[kennel user-data] $*"; }

# Instance metadata (IMDSv2): the private address peers and clients reach, and the name.
token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
imds() { curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"; }
address=$(imds local-ipv4)
region=$(imds placement/region)
name=$(imds tags/instance/Name || imds instance-id)
say "$KENNEL_ROLE $name at $address ($region)"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q podman awscli

# The certificate: files the container's user (uid 10001) reads, nobody else.
install -d -m 0700 -o 10001 -g 10001 /etc/kennel/tls
secret() {
  aws secretsmanager get-secret-value --region "$region" --secret-id "$KENNEL_SECRETS$1" \
    --query SecretString --output text >"/etc/kennel/tls/$2"
  chown 10001:10001 "/etc/kennel/tls/$2"
  chmod 0600 "/etc/kennel/tls/$2"
}
secret ca.pem ca.pem
secret "$name.pem" node.pem
secret "$name-key.pem" node-key.pem

registry=${KENNEL_IMAGE%%/*}
if [[ $registry == *.amazonaws.com ]]; then
  aws ecr get-login-password --region "$region" | podman login --username AWS --password-stdin "$registry"
fi
podman pull "$KENNEL_IMAGE"

tls=(--tls_ca=/etc/kennel/tls/ca.pem --tls_cert=/etc/kennel/tls/node.pem --tls_key=/etc/kennel/tls/node-key.pem)
run=(--network host --shm-size 1g -v /etc/kennel/tls:/etc/kennel/tls:ro)
case "$KENNEL_ROLE" in
  coordinator)
    install -d -m 0700 -o 10001 -g 10001 /var/lib/kennel
    run+=(-v /var/lib/kennel:/var/lib/kennel -v "$KENNEL_DATA:$KENNEL_DATA:ro")
    command=(kennel-coordinator --listen=0.0.0.0:7070 --data_dir=/var/lib/kennel "${tls[@]}")
    ;;
  trainer)
    # Host networking: Gloo and NCCL listen on ephemeral ports of this address.
    run+=(-v "$KENNEL_DATA:$KENNEL_DATA:ro")
    command=(kennel-trainer "--coordinator=$KENNEL_COORDINATOR" "--name=$name" "--advertise_host=$address"
      --work_dir=/var/cache/kennel "${tls[@]}")
    ;;
  inference)
    command=(kennel-inference "--coordinator=$KENNEL_COORDINATOR" "--name=$name" --listen=0.0.0.0:7080
      "--advertise=$address:7080" "--metrics_listen=$address:9102" --cache_dir=/var/cache/kennel "${tls[@]}")
    [[ $KENNEL_GPU == 1 ]] && command+=(--device=cuda --precision=fp16 --max_batch=128)
    ;;
  *)
    say "KENNEL_ROLE must be coordinator, trainer or inference, not '$KENNEL_ROLE'"
    exit 1
    ;;
esac
# The GPU through the NVIDIA container toolkit's CDI specification.
[[ $KENNEL_GPU == 1 ]] && run+=(--device nvidia.com/gpu=all)

# systemd keeps it running and stops it with SIGTERM (the process drains or checkpoints).
cat >/etc/systemd/system/kennel.service <<EOF
[Unit]
Description=Kennel $KENNEL_ROLE ($name)
After=network-online.target
Wants=network-online.target

[Service]
ExecStartPre=-/usr/bin/podman rm -f kennel
ExecStart=/usr/bin/podman run --rm --name kennel ${run[*]} $KENNEL_IMAGE ${command[*]}
ExecStop=/usr/bin/podman stop -t 60 kennel
Restart=on-failure
RestartSec=10
TimeoutStopSec=90

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable --now kennel.service
say "kennel.service started: journalctl -u kennel"
