#!/bin/bash
# Starts a real etcd and kube-apiserver (+ kube-controller-manager, for namespace deletion and
# Deployment → ReplicaSet) on 127.0.0.1 for the Kubernetes tests; no kubelet, no scheduler, so
# pods never run. The pod garbage collector is off: tests put pods on nodes that have no Node
# object, and it force-deletes such pods about 40 s after it first sees them (a test still
# using its pod then fails with "Pod … does not exist"). Builds the binaries first if they are
# not cached (scripts/kube-build.sh).
# Usage: scripts/kube-server.sh PORT   — prints the kubeconfig's path when the server is ready.
# Stop: kill $(cat /tmp/cairn-kube-PORT/*.pid)
set -euo pipefail
PORT=${1:-16443}
ETCD_PORT=$((PORT + 10000))
BIN=${CAIRN_KUBE_BIN:-/var/tmp/cairn-k8s-bin}
"$(dirname "$0")/kube-build.sh" >&2
RUN=/tmp/cairn-kube-$PORT
[ -d "$RUN" ] && for p in "$RUN"/*.pid; do kill "$(cat "$p")" 2>/dev/null || true; done
rm -rf "$RUN"; mkdir -p "$RUN/certs"
cd "$RUN"

openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
# A CA and a serving certificate signed by it: rustls refuses a CA certificate as the server's.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=cairn-test-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout certs/ca.key -out certs/ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout certs/apiserver.key -out certs/apiserver.csr 2>/dev/null
printf "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n" > certs/ext.cnf
openssl x509 -req -in certs/apiserver.csr -CA certs/ca.crt -CAkey certs/ca.key -CAcreateserial \
  -days 30 -extfile certs/ext.cnf -out certs/apiserver.crt 2>/dev/null
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,admin,admin-uid,system:masters" > tokens.csv

etcd --name default --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 1))" --unsafe-no-fsync \
  > etcd.log 2>&1 &
echo $! > etcd.pid

"$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$PORT" --insecure-port 0 \
  --tls-cert-file certs/apiserver.crt --tls-private-key-file certs/apiserver.key \
  --token-auth-file tokens.csv --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
  --disable-admission-plugins ServiceAccount \
  > kube-apiserver.log 2>&1 &
echo $! > kube-apiserver.pid

cat > kubeconfig <<KC
apiVersion: v1
kind: Config
clusters:
- name: cairn-test
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $RUN/certs/ca.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: cairn-test
  context: {cluster: cairn-test, user: admin, namespace: default}
current-context: cairn-test
KC

for _ in $(seq 1 600); do
  if curl -sf --cacert certs/ca.crt -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
    "$BIN/kube-controller-manager" --kubeconfig "$RUN/kubeconfig" --leader-elect=false \
      --bind-address 127.0.0.1 --secure-port 0 --port 0 \
      --service-account-private-key-file sa.key --root-ca-file certs/ca.crt \
      --use-service-account-credentials=false --controllers '*,-podgc' \
      > kube-controller-manager.log 2>&1 &
    echo $! > kube-controller-manager.pid
    echo "$RUN/kubeconfig"
    exit 0
  fi
  sleep 0.2
done
echo "kube-apiserver did not become ready; see $RUN/kube-apiserver.log" >&2
tail -20 kube-apiserver.log >&2
exit 1
