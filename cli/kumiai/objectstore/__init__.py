"""Each site's object store and the towns' buckets in it: versioned, object-locked S3 buckets that hold the
towns' pgBackRest repos, reconciled with boto3; the lab's own Ceph RGW (its certificates, its users)."""
