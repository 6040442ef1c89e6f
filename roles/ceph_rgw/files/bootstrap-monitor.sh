#!/bin/sh
# The lab's monitor store, made once (tasks/start.yml runs this until MON_DIR/kv_backend exists): the monitor's
# key, the administrator's key, the monitor map and the store. Every step can be repeated after an interruption.
# One process instead of an Ansible task per step.
# Usage: bootstrap-monitor.sh BIN_DIR CONF DIR NAME FSID ADDRESS USER
set -eu
bin=$1 conf=$2 dir=$3 name=$4 fsid=$5 address=$6 user=$7
mon_keyring=$dir/mon.keyring
admin_keyring=$dir/ceph.client.admin.keyring

[ -e "$mon_keyring" ] || "$bin/ceph-authtool" --create-keyring "$mon_keyring" --gen-key -n mon. --cap mon 'allow *'
[ -e "$admin_keyring" ] || "$bin/ceph-authtool" --create-keyring "$admin_keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *'
"$bin/ceph-authtool" "$mon_keyring" --import-keyring "$admin_keyring"
chown "$user:$user" "$mon_keyring"
chmod 0600 "$mon_keyring"
"$bin/monmaptool" --create --clobber --fsid "$fsid" --addv "$name" "[v2:$address:3300,v1:$address:6789]" "$dir/monmap"
/usr/bin/setpriv --reuid="$user" --regid="$user" --init-groups \
    "$bin/ceph-mon" --conf "$conf" --mkfs --id "$name" --monmap "$dir/monmap" --keyring "$mon_keyring"
