#!/usr/bin/env bash
# Install the Debian packages Shouwang's demo and tests need; idempotent.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -euo pipefail

# binary-to-check:package
NEEDED=(
  "/usr/sbin/mosquitto:mosquitto"        # MQTT broker: demo and integration tests
  "/usr/bin/chromium:chromium"           # headless browser tests of the dashboard
  "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:fonts-noto-cjk"  # Chinese in screenshots
  "/usr/lib/postgresql/*/bin/initdb:postgresql"  # private PostgreSQL for the store tests
  "/usr/bin/victoria-metrics:victoria-metrics"  # private VictoriaMetrics for telemetry tests
  # The camera simulator (simulators/rtsp_server.py) runs under Debian's python3 with gi.
  "/usr/lib/python3/dist-packages/gi/__init__.py:python3-gi"
  "/usr/lib/python3/dist-packages/numpy/__init__.py:python3-numpy"  # synthetic scenes
  "/usr/lib/*/girepository-1.0/GstRtspServer-1.0.typelib:gir1.2-gst-rtsp-server-1.0"
  "/usr/lib/*/girepository-1.0/GstApp-1.0.typelib:gir1.2-gst-plugins-base-1.0"
  "/usr/lib/*/gstreamer-1.0/libgstapp.so:gstreamer1.0-plugins-base"   # appsrc, videoscale
  "/usr/lib/*/gstreamer-1.0/libgstrtp.so:gstreamer1.0-plugins-good"   # rtph264pay, videoflip
  "/usr/lib/*/gstreamer-1.0/libgstvideoparsersbad.so:gstreamer1.0-plugins-bad"  # h264parse
  "/usr/lib/*/gstreamer-1.0/libgstx264.so:gstreamer1.0-plugins-ugly"  # x264enc
  "/usr/lib/*/gstreamer-1.0/libgstlibav.so:gstreamer1.0-libav"        # avdec_h264 (file faults)
  "/usr/bin/ffmpeg:ffmpeg"               # real H.264 MP4 clips for the evidence tests
  "/usr/bin/openssl:openssl"             # checks evidence signatures as a court would (docs/evidence.md)
  "/usr/bin/npm:npm"                     # axe-core for the accessibility tests (tests/browser/axe)
)

missing=()
for item in "${NEEDED[@]}"; do
  binary=${item%%:*}
  package=${item##*:}
  # A pattern (PostgreSQL's versioned bin dir) counts as present when anything matches it.
  compgen -G "$binary" >/dev/null || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep apt from starting system services (port 1883 may be taken): demo and tests start
  # their own servers on their own ports. Only remove a policy-rc.d that we created.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "system-deps: missing Debian packages: ${missing[*]}" >&2
  echo "system-deps: run:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
