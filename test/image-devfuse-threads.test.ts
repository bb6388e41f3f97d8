// The image folder's conformance suite (test/helpers/image-suite.ts) against the devfuse
// transport reading /dev/fuse with reader threads (channel.ts), the way it reads where Node
// cannot poll the descriptor; test/image-devfuse.test.ts runs it polled by the event loop.
import { imageSuite } from './helpers/image-suite'

process.env.LOGDISK_FUSE_READERS = '2'
imageSuite('devfuse')
