#!/usr/bin/env bash
# Run the sharded evaluation, then merge the shards (Kubernetes has no Job-after-Job ordering).
#   deploy/k8s/run_eval.sh [TIMEOUT_SECONDS]     (default 6 h; needs kubectl pointed at the cluster)
set -euo pipefail
here=$(dirname "$0")
deadline=$((SECONDS + ${1:-21600}))
kubectl -n vla delete job vla-eval vla-eval-merge --ignore-not-found
kubectl apply -f "$here/eval/eval-job.yaml"
while :; do
  # A Job ends with condition Complete or Failed set to True.
  state=$(kubectl -n vla get job vla-eval -o jsonpath='{.status.conditions[?(@.status=="True")].type}')
  case " $state " in
    *" Complete "*) break ;;
    *" Failed "*) echo "run_eval: job vla-eval failed; finished shards are kept, re-run to resume" >&2; exit 1 ;;
  esac
  if ((SECONDS > deadline)); then echo "run_eval: vla-eval still running at the deadline" >&2; exit 1; fi
  sleep 30
done
kubectl apply -f "$here/eval/merge-job.yaml"
kubectl -n vla wait --for=condition=complete job/vla-eval-merge --timeout=10m
kubectl -n vla logs job/vla-eval-merge
