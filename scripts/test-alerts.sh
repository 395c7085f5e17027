#!/usr/bin/env bash
# Unit-tests the alert rules of deploy/alerts.yaml with `promtool test rules` (Debian's
# `prometheus` package): the rule groups of the PrometheusRule are extracted into a plain rules
# file beside tests/alerts/alerts_test.yaml, which holds a firing and a silent case per alert.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool > /dev/null || { echo "promtool is missing: run scripts/setup.sh --tests" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# the PrometheusRule's `spec:` is a rules file indented by two spaces
sed -n '/^spec:$/,$p' deploy/alerts.yaml | tail -n +2 | sed 's/^  //' > "$scratch/rules.yaml"
cp tests/alerts/alerts_test.yaml "$scratch/"
promtool check rules "$scratch/rules.yaml"
promtool test rules "$scratch/alerts_test.yaml"
# every alert of the rules has a test case
missing=$(comm -23 <(sed -n 's/^ *- alert: //p' "$scratch/rules.yaml" | sort -u) \
  <(sed -n 's/^ *alertname: //p' tests/alerts/alerts_test.yaml | sort -u))
[ -z "$missing" ] || { echo "alerts without a test case in tests/alerts/alerts_test.yaml: $missing" >&2; exit 1; }
