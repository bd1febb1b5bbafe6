#!/usr/bin/env bash
# A whole Kennel cluster in containers (deploy/compose.yaml), run for real:
#   1. builds the image (deploy/container/build.sh), making the base image if it is missing;
#   2. brings the cluster up on its private network, TLS on: certificates, coordinator with a
#      state volume, two trainers, an inference node published on the host's 127.0.0.1:7080;
#   3. trains Fashion-MNIST (1 epoch) (the host's /usr/share/datasets, mounted read-only) and stops one
#      trainer container (SIGTERM) mid-job: the job must go on with the other and succeed;
#   4. deploys the model and classifies from the host through the published port, with a
#      client certificate (kennelctl bench on the host's network: accuracy, images/s);
#   5. kills the coordinator container and starts it again: the job and the model must still
#      be there;
#   6. starts containers with a missing certificate, an unwritable state volume and a wrong
#      coordinator address: each must exit at once with one line that says what to fix;
# then removes its containers, networks and volumes whatever happened (images stay), and prints
# one summary line. Exit 0 only if every check held.
#   deploy/container/e2e.sh            (KENNEL_ENGINE=docker for docker compose)
# KENNEL_E2E_SKIP_BUILD=1 uses the image as it is; KENNEL_BUILD_CCACHE as in build.sh.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=deploy/container/engine.sh
source "$repo/deploy/container/engine.sh"
export KENNEL_IMAGE=localhost/kennel:latest
project=kennel-e2e
network=${project}_cluster
compose_file=$repo/deploy/compose.yaml
dc() { compose -p "$project" -f "$compose_file" "$@"; }
fail() { say "FAILED: $*"; exit 1; }

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    say "logs of the cluster's containers (last lines each):"
    for c in $(engine ps -a --filter "label=com.docker.compose.project=$project" --format '{{.Names}}' 2>/dev/null); do
      echo "--- $c" >&2
      engine logs --tail 15 "$c" >&2 2>&1 || true
    done
  fi
  dc down -v -t 30 >/dev/null 2>&1 || true
  engine rm -f "$project-probe" >/dev/null 2>&1 || true
  engine volume rm -f "$project-root-owned" >/dev/null 2>&1 || true
  engine network rm "$network" >/dev/null 2>&1 || true
  rm -rf "${logs:-}"
  say "removed the cluster's containers, network and volumes"
  exit "$rc"
}
trap cleanup EXIT

# kennelctl inside the cluster's network, as its administrator.
ctl() {
  engine run --rm --network "$network" -v "${project}_certs:/etc/kennel/tls:ro" \
    -e KENNEL_COORDINATOR=coordinator:7070 -e KENNEL_TLS_CA=/etc/kennel/tls/ca.pem \
    -e KENNEL_TLS_CERT=/etc/kennel/tls/admin.pem -e KENNEL_TLS_KEY=/etc/kennel/tls/admin-key.pem \
    "$KENNEL_IMAGE" kennelctl -o json "$@"
}
# The Python expression $1 over the JSON on stdin (d); a JSON without it fails the run, loudly.
jq_() {
  local json
  json=$(cat)
  python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1" <<<"$json" 2>/dev/null ||
    fail "no $1 in: $json"
}
# Polls `ctl ARGS` until the Python expression over its JSON (d) is true; at most SECONDS.
wait_for() {
  local seconds=$1 expr=$2 out
  shift 2
  for ((i = 0; i < seconds; i += 2)); do
    out=$(ctl "$@" 2>/dev/null || true)
    [[ -n $out && $(jq_ "$expr" <<<"$out" 2>/dev/null) == True ]] && return 0
    sleep 2
  done
  echo "$out" >&2
  return 1
}

start=$SECONDS
if [[ -z ${KENNEL_E2E_SKIP_BUILD:-} ]]; then
  "$repo/deploy/container/build.sh" kennel
else
  ensure_base_image
fi
image_mb=$(($(engine image inspect "$KENNEL_IMAGE" --format '{{.Size}}') / 1000000))
user=$(engine image inspect "$KENNEL_IMAGE" --format '{{.Config.User}}')
[[ $user == 10001:10001 ]] || fail "the image runs as '$user', not uid 10001"
built=$SECONDS

logs=$(mktemp -d)
dc down -v >/dev/null 2>&1 || true
say "certificates (one-shot service)"
dc up certs >"$logs/certs.log" 2>&1 || true
[[ $(engine inspect "${project}_certs_1" --format '{{.State.ExitCode}}' 2>/dev/null || echo none) == 0 ]] ||
  fail "the certs service did not finish: $(engine logs "${project}_certs_1" 2>&1 | tail -3)"
say "cluster up: coordinator, trainer-1, trainer-2, inference-1"
dc up -d --no-deps coordinator trainer-1 trainer-2 inference-1 >"$logs/up.log" 2>&1 ||
  fail "compose up: $(tail -5 "$logs/up.log")"
for service in coordinator trainer-1 trainer-2 inference-1; do
  [[ $(engine inspect "${project}_${service}_1" --format '{{.State.Running}}' 2>/dev/null) == true ]] ||
    fail "$service is not running: $(grep -i error "$logs/up.log" | grep -v 'no such volume' | tail -3)"
done
wait_for 90 "sorted((n['name'], n['state']) for n in d['nodes']) == [('inference-1', 'IDLE'), ('trainer-1', 'IDLE'), ('trainer-2', 'IDLE')]" status ||
  fail "the members did not register"

say "training Fashion-MNIST on two trainers; trainer-2 is stopped mid-job"
train_start=$SECONDS
job=$(ctl train --name fashion --epochs 1 --min-world-size 1 --checkpoint-every 50 --detach | jq_ "d['id']")
wait_for 120 "int(d.get('last_step', {}).get('global_step', 0)) >= 100" job "$job" || fail "$job made no progress"
engine stop -t 40 "${project}_trainer-2_1" >/dev/null
wait_for 300 "d['state'] in ('SUCCEEDED', 'FAILED', 'CANCELLED')" job "$job" || fail "$job did not end"
job_json=$(ctl job "$job")
[[ $(jq_ "d['state']" <<<"$job_json") == SUCCEEDED ]] || fail "$job: $(jq_ "d['state'] + ': ' + d.get('message', '')" <<<"$job_json")"
trained_s=$((SECONDS - train_start))
generation=$(jq_ "int(d['generation'])" <<<"$job_json")
ranks=$(jq_ "','.join(d['nodes'])" <<<"$job_json")
((generation >= 2)) || fail "$job stayed in generation $generation: the stopped trainer was not noticed"
[[ $ranks == trainer-1 ]] || fail "$job ended on '$ranks', not on trainer-1 alone"
eval_accuracy=$(jq_ "round(d['epochs'][-1]['eval_accuracy'], 4)" <<<"$job_json")

say "deploying, then classifying from the host through 127.0.0.1:7080 with a client certificate"
out=$(ctl deploy fashion 2>&1) || fail "deploy: $out"
bench=$(engine run --rm --network host --log-driver none -v "${project}_certs:/etc/kennel/tls:ro" \
  -v /usr/share/datasets/fashion-mnist:/usr/share/datasets/fashion-mnist:ro \
  -e KENNEL_TLS_CA=/etc/kennel/tls/ca.pem -e KENNEL_TLS_CERT=/etc/kennel/tls/client.pem \
  -e KENNEL_TLS_KEY=/etc/kennel/tls/client-key.pem \
  "$KENNEL_IMAGE" kennelctl bench -o json -s 127.0.0.1:7080 --duration 5 --concurrency 8 --fashion-mnist 10000 2>"$logs/bench.err") ||
  fail "classifying from the host: $bench $(cat "$logs/bench.err")"
[[ $(jq_ "d['failed']" <<<"$bench") == 0 ]] || fail "requests failed: $bench"
served_accuracy=$(jq_ "round(d['accuracy'], 4)" <<<"$bench")
throughput=$(jq_ "round(d['throughput'])" <<<"$bench")
p99=$(jq_ "round(d['p99_ms'], 1)" <<<"$bench")

say "killing the coordinator container (SIGKILL: no checkpoint, no clean stop) and starting it again"
engine kill "${project}_coordinator_1" >/dev/null
engine start "${project}_coordinator_1" >/dev/null
wait_for 60 "any(j['id'] == '$job' and j['state'] == 'SUCCEEDED' for j in d['jobs'])" jobs || fail "$job was lost"
wait_for 30 "any(int(m['manifest']['version']) == 1 for m in d['models'])" models fashion || fail "model fashion 1 was lost"

say "containers given bad input exit at once, saying what to fix"
# A state volume that root made and uid 10001 cannot write (as a host folder often is).
engine volume create "$project-root-owned" >/dev/null
engine run --rm --log-driver none --user 0 -v "$project-root-owned:/state" "$KENNEL_IMAGE" \
  sh -c 'chown 0:0 /state && chmod 755 /state'

refused=0
# refuses RUN_OPTIONS SAYS COMMAND...: the container must exit non-zero within 30 s, its output
# one line naming SAYS.
refuses() {
  local options=$1 says=$2 out rc=0
  shift 2
  # shellcheck disable=SC2086  # The options split on purpose.
  out=$(timeout 30 "$KENNEL_ENGINE" run --rm --log-driver none --network "$network" \
    -v "${project}_certs:/etc/kennel/tls:ro" $options "$KENNEL_IMAGE" "$@" 2>&1) || rc=$?
  ((rc != 0)) || fail "'$*' exited 0: $out"
  ((rc != 124)) || fail "'$*' did not exit within 30 s: $out"
  local lines
  lines=$(grep -cv '^$' <<<"$out" || true)
  [[ $out == *"$says"* && $lines -le 2 ]] || fail "'$*' said, in $lines lines: $out"
  say "refused: $out"
  refused=$((refused + 1))
}
refuses "" nobody.pem kennel-trainer --coordinator=coordinator:7070 --name=nobody --tls_ca=/etc/kennel/tls/ca.pem \
  --tls_cert=/etc/kennel/tls/nobody.pem --tls_key=/etc/kennel/tls/nobody-key.pem
refuses "-v $project-root-owned:/state" --data_dir kennel-coordinator --listen=0.0.0.0:7070 --data_dir=/state/kennel --insecure
refuses "" coordinatr kennel-trainer --coordinator=coordinatr:7070 --name=lost
total=$((SECONDS - start))
echo "[e2e] image kennel ${image_mb} MB (uid 10001), built in $((built - start)) s; fashion trained in ${trained_s} s" \
  "(1 epoch, eval accuracy $eval_accuracy), trainer-2 stopped mid-job: finished in generation $generation on $ranks;" \
  "served from the host with TLS: accuracy $served_accuracy, $throughput images/s, p99 $p99 ms, 0 failed;" \
  "coordinator killed and started again kept $job and model fashion 1; bad input refused in one line: $refused of 3; ${total} s in all"
