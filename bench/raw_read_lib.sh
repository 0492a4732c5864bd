# Shared by the bench scripts (sourced, not run): the raw-read baseline. Expects $dir (scratch) and $here.
#   can_drop     1 when the page cache can be dropped (root), else 0
#   drop_caches  drops it
#   raw_read_ms warm|cold FILE...  prints the milliseconds fio takes to read the files (buffered after reading
#                them once, or O_DIRECT after dropping the caches), or bench/raw_read.py without fio
can_drop=0
if sync && echo 3 2>/dev/null > /proc/sys/vm/drop_caches; then can_drop=1; fi
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
py() { python3 -c "$@"; }

# Raw read of a version's files: warm (buffered, after reading them once) or cold (caches dropped, O_DIRECT).
raw_read_ms() {  # $1 warm|cold, $2.. paths
  local mode=$1; shift
  if [ "$mode" = cold ]; then drop_caches; else cat "$@" > /dev/null; fi
  if command -v fio > /dev/null; then
    # One job per file (fio splits --size evenly over the files of one job); job_runtime summed. Direct reads
    # need whole blocks: 4 MiB (4 KiB for small files), the file's tail past the last whole block left out.
    local direct=0; [ "$mode" = cold ] && direct=1
    local engine=libaio; fio --enghelp=io_uring > /dev/null 2>&1 && engine=io_uring
    local total=0 f size bs
    for f in "$@"; do
      size=$(stat -c %s "$f"); bs=4194304; [ "$size" -lt $((4 * bs)) ] && bs=4096
      size=$((size / bs * bs)); [ "$size" -gt 0 ] || continue
      fio --name=raw --filename="$f" --rw=read --bs=$bs --iodepth=16 --ioengine=$engine --direct=$direct \
        --size="$size" --output-format=json > "$dir/fio.json" 2> "$dir/fio.err" || { cat "$dir/fio.err" >&2; return 1; }
      total=$(py 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(float(sys.argv[2]) + (j.get("job_runtime") or j["read"]["runtime"]))' "$dir/fio.json" "$total")
    done
    echo "$total"
  else
    local direct=; [ "$mode" = cold ] && direct=--direct
    python3 "$here/raw_read.py" $direct --depth 16 "$@"
  fi
}

