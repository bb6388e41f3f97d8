/**
 * Replication beyond one machine (issue 14, docs/REPLICATION.md): the Replicator ships a
 * store's log to a directory or S3 as it is written; createFromReplica builds a store from
 * such a replica on another host. The store knows nothing of it beyond two read calls
 * (logSegments, readLog) and the retainFrom gate its passes respect.
 */
export { Replicator, DEFAULT_REPLICATE_INTERVAL_MS, DEFAULT_LAG_WARN_MS, type ReplicationStatus, type ReplicatorOptions } from './replicator'
export { ReplicationManager, replicationStatus } from './manager'
export { createFromReplica, type RecoverResult } from './recover'
export { newestManifest, decodeManifest, type Manifest } from './format'
export { retainFrom, readReplicaState, REPLICA_STATE_FILE } from './gate'
export { Hydrator, type HydrateStatus } from './hydrate'
export { readReplicaSource, REPLICA_SOURCE_FILE } from './source-link'
export { cloneFromReplica, replicaParentDir, REPLICA_PARENT_FILE } from './clone-replica'
