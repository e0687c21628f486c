# Source this on the lent GPU machine (the device tool), in the repository root, at the start of every
# call: it sets up once per machine what scripts/gpu-stage.sh carried, and appends a carried model chunk.
#   .whl/ -> /root/site (PYTHONPATH)     .deb/ -> /root/bw (PATH: bwrap)     .data/ -> /root/data
#   .stage/cur + .stage/meta ("DIR N": chunk N of the model in /root/DIR/model.gguf), appended only if
#   N is the next chunk that file needs, so a repeated call cannot append a chunk twice (the last
#   chunk is shorter: once it is in, the file is whole and no chunk follows).
# Then: PYTHONPATH, PATH, EGCFG_CACHE are exported, and `egcfg` runs as python3 -m egcfg.
if [ -d .whl ] && [ ! -f /root/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site .whl/*.whl \
    && touch /root/site/.done
fi
if [ -d .deb ] && [ ! -x /root/bw/usr/bin/bwrap ]; then
  for f in .deb/*.deb; do dpkg -x "$f" /root/bw; done
fi
if [ -d .data ] && [ ! -f /root/data/.done ]; then
  mkdir -p /root/data && cp -r .data/. /root/data/ && touch /root/data/.done
fi
if [ -f .stage/meta ] && [ -f .stage/cur ]; then
  read -r dir n < .stage/meta
  mkdir -p "/root/$dir"
  next=$(cat "/root/$dir/.next" 2>/dev/null || echo 0)
  have=$(stat -c %s "/root/$dir/model.gguf" 2>/dev/null || echo 0)
  if [ "$have" != "$(cat "/root/$dir/.bytes" 2>/dev/null || echo 0)" ]; then  # a chunk half appended: start over
    echo "gpu-env: /root/$dir/model.gguf holds $have bytes, not its $next whole chunks: starting it again"
    rm -f "/root/$dir/model.gguf"; next=0; echo 0 > "/root/$dir/.next"; echo 0 > "/root/$dir/.bytes"
  fi
  if [ "$((10#$n))" = "$next" ]; then
    cat .stage/cur >> "/root/$dir/model.gguf" && echo $((next + 1)) > "/root/$dir/.next" \
      && stat -c %s "/root/$dir/model.gguf" > "/root/$dir/.bytes"
  fi
  echo "gpu-env: /root/$dir/model.gguf $(stat -c %s "/root/$dir/model.gguf") bytes, $(cat "/root/$dir/.next") chunks"
fi
export PYTHONPATH=/root/site:$PWD/src PATH=/root/bw/usr/bin:$PATH EGCFG_CACHE=/root/cache
export LD_LIBRARY_PATH=/root/bw/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
