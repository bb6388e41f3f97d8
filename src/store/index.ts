/** The logdisk store: a library with no FUSE or command-line dependency. */
export { Store, type OpenOptions, type StoreStatus } from './store'
export { type StoreConfig, type CreateOptions } from './config'
export { type FileLayer, type FileHandle, nodeFileLayer } from './file-layer'
export { type Logger, silentLogger } from './logger'
export { type RecoveryReport } from './recovery'
export { type VerifyReport } from './verify'
export { EntryKind } from './format'
export { LogdiskError, type ErrorCode, isLogdiskError } from '../errors'
