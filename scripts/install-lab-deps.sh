#!/usr/bin/env bash
# Debian packages the lab runs on: PostgreSQL 15, pgBackRest, etcd and Ceph RGW. Installs only what is missing; a
# second run does nothing. (On Debian 12 postgresql-contrib-15 is a virtual package provided by postgresql-15.)
# Debian's apt starts no services where there is no systemd; where there is, the default 15/main cluster and
# etcd listen on 127.0.0.1, which the lab (127.0.1.0/24, 127.0.2.0/24) never uses.
set -euo pipefail

# nftables: partition tests. chromium and CJK fonts: reports (drill evidence, diffs) are checked rendered, as a person
# reads them. radosgw, ceph-mon, ceph-osd: each site's object store (Ceph RGW, S3 with object lock); they start
# nothing on install.
packages=(postgresql-15 pgbackrest etcd-server etcd-client nftables chromium fonts-noto-cjk radosgw ceph-mon ceph-osd)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

echo "Installing missing Debian packages: ${missing[*]}"
sudo=()
if ((EUID != 0)); then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
