/* An etcd snapshot (a backup) made readable for the audit: restored with
 * `etcdctl snapshot restore` into a private temporary directory, and
 * served by a private etcd that listens only on Unix sockets inside it,
 * until snapshot_close stops it and removes the directory. etcd and
 * etcdctl are found on PATH (Debian: etcd-server, etcd-client).
 * Must not: touch the snapshot file, or leave a process or file behind. */
#ifndef TPM2KMS_SNAPSHOT_H
#define TPM2KMS_SNAPSHOT_H

typedef struct snapshot snapshot;

/* Restores file and starts the private etcd, waiting up to timeout_ms for
 * it to answer. Logs, with the tools' own output, what failed. */
int snapshot_open(const char *file, int timeout_ms, snapshot **ret);
/* The private etcd's client URL (unix://...). */
const char *snapshot_endpoint(const snapshot *s);
void snapshot_close(snapshot *s);

#endif
