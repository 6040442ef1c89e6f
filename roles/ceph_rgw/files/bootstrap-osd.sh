#!/bin/sh
# The lab's one OSD, made once (tasks/start.yml runs this until OSD_DIR/ready exists), and radosgw's key: waits
# until the monitor answers, registers OSD 0 (a fixed uuid, so `osd new` can be repeated) with its key and
# creates its bluestore. Every step can be repeated after an interruption. One process instead of an Ansible task
# per step.
# Usage: bootstrap-osd.sh BIN_DIR CONF OSD_DIR OSD_UUID USER RGW_CLIENT RGW_KEYRING WAIT_SECONDS
set -eu
bin=$1 conf=$2 osd_dir=$3 uuid=$4 user=$5 rgw_client=$6 rgw_keyring=$7 wait=$8
ceph() { "$bin/ceph" --conf "$conf" --connect-timeout 20 "$@"; }
as_user() { /usr/bin/setpriv --reuid="$user" --regid="$user" --init-groups "$@"; }

tries=0
until ceph mon stat >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge $((wait * 4)) ]; then
        echo "the monitor did not answer within $wait s" >&2
        exit 1
    fi
    sleep 0.25
done
[ -e "$osd_dir/keyring" ] || as_user "$bin/ceph-authtool" --create-keyring "$osd_dir/keyring" --gen-key -n osd.0
ceph osd new "$uuid" 0
ceph auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -i "$osd_dir/keyring"
[ -e "$rgw_keyring" ] || ceph auth get-or-create "$rgw_client" mon 'allow rw' osd 'allow rwx' -o "$rgw_keyring"
as_user "$bin/ceph-osd" --conf "$conf" --id 0 --mkfs --osd-uuid "$uuid"
